"""GELU per source: a vit_jax-layout .npz is converted into a model with the tanh GELU it was trained with,
and reproduces the logits of an independent NumPy ViT with that GELU (and not with the exact one)."""

import os

import numpy as np
import pytest
from scipy.special import erf

from helpers import ROOT, parse_config
from tokenlearner_jax import convert, models
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
NPZ = os.path.join(FIXTURES, "vit_tiny_token_vitjax.npz")
IMAGES = np.load(os.path.join(FIXTURES, "vit_tiny_io.npz"))["images"]  # [2, 16, 16, 3]


def numpy_vit(arrays: dict, images: np.ndarray, gelu: str) -> np.ndarray:
    """The vit_jax ViT (class token, pre-norm blocks, patch 4) on `images`, in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in arrays.items()}
    t = "Transformer/"

    def norm(x, name):
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-6) * p[name + "/scale"] + p[name + "/bias"]

    def activation(x):
        if gelu == "erf":
            return 0.5 * x * (1 + erf(x / np.sqrt(2)))
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)))

    batch = images.shape[0]
    patches = images.reshape(batch, 4, 4, 4, 4, 3).transpose(0, 1, 3, 2, 4, 5).reshape(batch, 16, 48)
    x = patches @ p["embedding/kernel"].reshape(48, -1) + p["embedding/bias"]
    x = np.concatenate([np.repeat(p["cls"], batch, axis=0), x], axis=1) + p[t + "posembed_input/pos_embedding"]
    for i in range(2):
        b = f"{t}encoderblock_{i}/"
        a = b + "MultiHeadDotProductAttention_1/"
        y = norm(x, b + "LayerNorm_0")
        q, k, v = (np.einsum("bld,dhk->bhlk", y, p[a + n + "/kernel"]) + p[a + n + "/bias"][None, :, None]
                   for n in ("query", "key", "value"))
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        x = x + np.einsum("bhlk,hkd->bld", weights @ v, p[a + "out/kernel"]) + p[a + "out/bias"]
        m = b + "MlpBlock_3/"
        h = activation(norm(x, b + "LayerNorm_2") @ p[m + "Dense_0/kernel"] + p[m + "Dense_0/bias"])
        x = x + h @ p[m + "Dense_1/kernel"] + p[m + "Dense_1/bias"]
    return norm(x, t + "encoder_norm")[:, 0] @ p["head/kernel"] + p["head/bias"]


def test_a_vit_jax_npz_converts_to_the_tanh_gelu_and_reproduces_its_logits(tmp_path):
    arrays = dict(np.load(NPZ))
    reference = {gelu: numpy_vit(arrays, IMAGES.astype(np.float64), gelu) for gelu in ("tanh", "erf")}
    assert np.abs(reference["tanh"] - reference["erf"]).max() > 1e-4  # the flavours are told apart
    assert init_from.source_gelu(NPZ) == "tanh"
    assert init_from.source_gelu(os.path.join(FIXTURES, "vit_tiny_token.safetensors")) == "erf"

    config = parse_config(["--config=configs/quickstart.py", "--config.model.width=32", "--config.model.depth=2",
                           "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.dataset.image_size=16",
                           "--config.model.token_learner.enabled=False", "--config.model.num_classes=5",
                           "--config.model.classifier=token"])
    assert config.model.gelu == "erf"
    convert.convert(config, NPZ, str(tmp_path / "converted"))
    assert config.model.gelu == "tanh"  # set from the source
    variables, _ = init_from.restore_variables(str(tmp_path / "converted"))
    logits = np.asarray(models.build(config.model).apply(variables, IMAGES, train=False))
    np.testing.assert_allclose(logits, reference["tanh"], rtol=0, atol=1e-5)
    config.model.gelu = "erf"
    erf_logits = np.asarray(models.build(config.model).apply(variables, IMAGES, train=False))
    np.testing.assert_allclose(erf_logits, reference["erf"], rtol=0, atol=1e-5)


def test_a_gelu_that_differs_from_the_source_is_reported(caplog):
    config = models.config("vit", variant="S/4", gelu="erf")
    init_from.check_gelu(config, NPZ)
    assert "trained with the tanh GELU, but config.model.gelu='erf'" in caplog.text


@pytest.mark.parametrize("name", ["vit", "vivit", "nest"])
def test_the_backbone_gelu_is_a_checked_field(name):
    config = models.config(name, gelu="relu")
    with pytest.raises(ValueError, match="config.model.gelu='relu'"):
        models.build(config)
