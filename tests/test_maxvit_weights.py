"""timm MaxViT weights (weights/maxvit.py): parity with timm's eval-mode and train-mode logits on
committed fixtures (experiments/make_maxvit_fixtures.py), BatchNorm statistics and momentum, the
full-size maxvit_tiny_tf_224 / _384 layouts, a 224 checkpoint loaded into a window-12 model, and
every refusal."""

import json
import os

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from helpers import ROOT
from tokenlearner_jax import convert, recipes, models
from tokenlearner_jax import weights
from tokenlearner_jax.models import flops
from tokenlearner_jax.weights import maxvit as maxvit_weights
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def load_tiny():
    tensors = safetensors.numpy.load_file(os.path.join(FIXTURES, "maxvit_tiny.safetensors"))
    io = dict(np.load(os.path.join(FIXTURES, "maxvit_tiny_io.npz")))
    config = models.config("maxvit", variant="T", num_classes=io["logits"].shape[-1])
    config.stem_widths = tuple(int(d) for d in io["stem_widths"])
    config.depths = tuple(int(d) for d in io["depths"])
    config.dims = tuple(int(d) for d in io["dims"])
    config.head_dim = int(io["head_dim"])
    config.drop_path_rate = 0.0
    return tensors, io, config


def test_converted_tiny_model_reproduces_timms_logits_and_batch_statistics():
    """Eval mode (running statistics) and train mode (batch statistics) against timm, and the running
    statistics after one train-mode step against timm's with its BN momentum 0.01 (= our 0.99)."""
    tensors, io, config = load_tiny()
    variables = maxvit_weights.from_safetensors(tensors, config)
    model = models.build(config)
    images = io["images"].astype(np.float32)
    logits = np.asarray(jax.jit(lambda v: model.apply(v, images))(variables))
    np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)
    assert np.abs(io["logits"]).max() > 0.5
    train_logits, state = jax.jit(lambda v: model.apply(v, images, train=True, mutable=["batch_stats"]))(variables)
    np.testing.assert_allclose(np.asarray(train_logits), io["train_logits"], atol=1e-4, rtol=0)
    assert np.abs(io["train_logits"] - io["logits"]).max() > 0.1  # the two modes differ: statistics matter
    stem = state["batch_stats"]["stem"]["norm_1"]
    np.testing.assert_allclose(np.asarray(stem["mean"]), io["stem_running_mean"], atol=1e-6)
    # torch updates the running variance with the unbiased batch variance, Flax with the biased one:
    # over 2 x 48 x 96 positions they differ by a factor 1 + 1e-4, i.e. ~1e-6 after the 0.01 weight.
    np.testing.assert_allclose(np.asarray(stem["var"]), io["stem_running_var"], atol=1e-5)


def test_the_converter_is_found_by_model_name():
    assert weights.converter("maxvit", "safetensors") is maxvit_weights.from_safetensors


def layout(name):
    with open(os.path.join(FIXTURES, f"{name}_keys.json"), encoding="utf-8") as f:
        return {key: np.zeros(shape, np.float32) for key, shape in json.load(f)["tensors"].items()}


def shapes(tree):
    return {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}


@pytest.mark.parametrize("name,size", [("maxvit_tiny_tf_224", 224), ("maxvit_tiny_tf_384", 384)])
def test_the_full_size_layouts_map_completely(name, size):
    """Every tensor of timm's maxvit_tiny_tf_224 / _384 state dict (names and shapes recorded from timm)
    lands on a parameter or batch statistic of our MaxViT-T at that resolution with the same shape, and
    every one of ours is covered."""
    tensors = layout(name)
    converted = maxvit_weights.from_safetensors(tensors, models.config("maxvit", variant="T"))
    ours = flops.abstract_variables(models.build(models.config("maxvit", variant="T")), (size, size, 3))
    assert set(converted) == set(ours) == {"params", "batch_stats"}
    for collection in ours:
        assert shapes(converted[collection]) == shapes(ours[collection]), collection
    trainable = sum(int(np.prod(v.shape)) for k, v in tensors.items()
                    if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert trainable == flops.count_params(ours["params"])


def full_config(model_config, image_size):
    config = recipes.base()
    config.dataset.image_size = image_size
    config.model = model_config
    return config


def test_a_224_checkpoint_loads_into_a_window_12_model():
    """maxvit_tiny_tf_224's layout (13x13 bias tables) reconciled with MaxViT-T at 384 (window and grid
    12): every relative bias table is resized to 23x23, everything else is loaded as it is."""
    config = full_config(models.config("maxvit", variant="T"), 384)
    source = maxvit_weights.from_safetensors(layout("maxvit_tiny_tf_224"), config.model)
    target = flops.abstract_variables(models.build(config.model), (384, 384, 3))
    values, report = init_from.reconcile(source, target, config.init_from)
    tables = [k for k in init_from.flatten(target) if k[1].endswith("relative_position_bias/table")]
    assert len(tables) == 2 * 11 and len(report.adapted) == len(tables)
    assert all(values[k].shape[1:] == (23, 23) for k in tables)
    assert not report.fresh and not report.ignored
    # The converter can resize them itself when told the resolution.
    direct = maxvit_weights.from_safetensors(layout("maxvit_tiny_tf_224"), config.model, image_size=384)
    assert direct["params"]["stage_2"]["block_4"]["grid_attention"]["relative_position_bias"]["table"].shape == \
        (8, 23, 23)


def test_through_the_converter_path_the_logits_still_match():
    """init_from.load_source (what `python -m tokenlearner_jax.convert` and `config.init_from` read with)
    finds our map by model name; reconcile fills every parameter and batch statistic."""
    _, io, model_config = load_tiny()
    config = full_config(model_config, 96)
    source = init_from.load_source(os.path.join(FIXTURES, "maxvit_tiny.safetensors"), config.model)
    target = jax.eval_shape(lambda: convert.initial_variables(config))
    values, report = init_from.reconcile(source, target, config.init_from)
    assert not report.fresh and not report.adapted and not report.ignored
    assert any(key[0] == "batch_stats" for key in values)
    variables = init_from.unflatten(values)
    images = io["images"].astype(np.float32)
    logits = jax.jit(lambda v: models.build(config.model).apply(v, images))(variables)
    np.testing.assert_allclose(np.asarray(logits), io["logits"], atol=1e-4, rtol=0)


def test_token_learner_starts_fresh_on_timms_weights():
    _, _, model_config = load_tiny()
    model_config.token_learner.update(enabled=True, location=3, num_tokens=4, use_fuser=True)
    config = full_config(model_config, 96)
    config.init_from.fresh_if_missing = ("/token_learner/",)
    source = init_from.load_source(os.path.join(FIXTURES, "maxvit_tiny.safetensors"), config.model)
    target = jax.eval_shape(lambda: convert.initial_variables(config))
    _, report = init_from.reconcile(source, target, config.init_from)
    assert report.fresh and all("stage_3/token_learner/" in name for name in report.fresh)
    assert any("token_fuser" in name for name in report.fresh) and not report.ignored


def test_a_leftover_tensor_is_named():
    tensors, _, config = load_tiny()
    tensors["stages.0.blocks.0.conv.extra.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=r"stages\.0\.blocks\.0\.conv\.extra\.weight"):
        maxvit_weights.from_safetensors(tensors, config)


def test_a_checkpoint_deeper_than_the_config_leaves_tensors_over():
    tensors, _, config = load_tiny()
    config.depths = (1, 1, 1, 1)  # the fixture's stage 1 has two blocks
    with pytest.raises(ValueError, match=r"stages\.1\.blocks\.1\."):
        maxvit_weights.from_safetensors(tensors, config)


@pytest.mark.parametrize("key", ["stages.2.blocks.0.conv.norm1.running_var",
                                 "stages.1.blocks.1.attn_grid.attn.rel_pos.relative_position_bias_table"])
def test_a_missing_tensor_is_named(key):
    tensors, _, config = load_tiny()
    del tensors[key]
    with pytest.raises(ValueError, match=f"missing tensor '{key}'".replace(".", r"\.")):
        maxvit_weights.from_safetensors(tensors, config)
