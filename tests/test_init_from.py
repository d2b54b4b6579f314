"""Starting from published checkpoints: timm safetensors and vit_jax / big_vision npz fixtures give the
reference logits, a full-size ViT-B/16 key map is complete both ways, position embeddings are
resampled, heads and TokenLearner start fresh, anything else that differs is an error naming the
parameter, and the converter and main.py's init_from hook work from the command line.

The fixtures under tests/fixtures/ come from experiments/make_vit_fixtures.py (timm)."""

import json
import os

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from helpers import ROOT, final_params, parse_config, run_python
from tokenlearner_jax import models, recipes
from tokenlearner_jax.weights import vit as vit_weights
from tokenlearner_jax.train import trainer
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SAFETENSORS = os.path.join(FIXTURES, "vit_tiny_token.safetensors")
VITJAX_NPZ = os.path.join(FIXTURES, "vit_tiny_token_vitjax.npz")
BIGVISION_NPZ = os.path.join(FIXTURES, "vit_tiny_gap_bigvision.npz")
IO = np.load(os.path.join(FIXTURES, "vit_tiny_io.npz"))

# The fixtures' architecture, as command-line overrides of the quickstart config.
TINY_FLAGS = ["--config=configs/quickstart.py", "--config.model.width=32", "--config.model.depth=2",
              "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.dataset.image_size=16"]


def tiny_model(classifier="token", num_classes=5, **overrides):
    config = models.config("vit", variant="S/4", num_classes=num_classes, classifier=classifier)
    config.width, config.depth, config.num_heads, config.mlp_dim = 32, 2, 2, 64
    config.update(overrides)
    return config


def init_config(**overrides):
    config = recipes.base().init_from
    config.update(overrides)
    return config


def abstract_variables(model_config, image_size):
    model = models.build(model_config)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, image_size, image_size, 3))))
    return {"params": flax.core.meta.unbox(shapes["params"])}


def flat_params(variables):
    return {name: np.asarray(v) for (_, name), v in init_from.flatten({"params": variables["params"]}).items()}


@pytest.mark.parametrize("path, classifier, reference", [
    (SAFETENSORS, "token", "logits_token"),
    (VITJAX_NPZ, "token", "logits_token"),
    (BIGVISION_NPZ, "gap", "logits_gap"),
], ids=["timm-safetensors", "vitjax-npz", "bigvision-scanned-npz"])
def test_converted_fixture_reproduces_the_reference_logits(path, classifier, reference):
    config = tiny_model(classifier)
    variables = init_from.load_source(path, config)
    logits = models.build(config).apply(variables, IO["images"], train=False)
    np.testing.assert_allclose(np.asarray(logits), IO[reference], atol=1e-4, rtol=0)


@pytest.mark.parametrize("layout", ["safetensors", "npz"])
def test_vit_b16_key_map_covers_every_parameter_both_ways(layout):
    with open(os.path.join(FIXTURES, "vit_b16_keys.json"), encoding="utf-8") as f:
        source = {name: jax.ShapeDtypeStruct(tuple(shape), jnp.float32)
                  for name, shape in json.load(f)[layout].items()}
    config = models.config("vit", variant="B/16", num_classes=1000, classifier="token")
    convert = getattr(vit_weights, f"from_{layout}")
    mapped = jax.eval_shape(lambda tensors: convert(tensors, config), source)  # raises on an unused tensor
    target = abstract_variables(config, 224)
    shape_of = lambda tree: {k: v.shape for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}
    assert shape_of(mapped["params"]) == shape_of(target["params"])
    assert len(shape_of(target["params"])) == 200 and len(source) == (200 if layout == "npz" else 152)

    extra = dict(source, **{"fc_norm.weight" if layout == "safetensors" else "MAPHead_0/probe":
                            jax.ShapeDtypeStruct((768,), jnp.float32)})
    with pytest.raises(ValueError, match="fc_norm.weight|MAPHead_0/probe"):
        jax.eval_shape(lambda tensors: convert(tensors, config), extra)


def test_resample_posemb_interpolates_the_grid_and_keeps_the_class_row():
    rows = np.repeat(np.arange(2.0)[:, None], 2, axis=1)  # value = row index on a 2x2 grid
    posemb = np.concatenate([np.full((1, 1, 3), 7.0), np.repeat(rows.reshape(1, 4, 1), 3, axis=2)], axis=1)
    out, note = init_from.resample_posemb(posemb, (1, 17, 3))
    assert out.shape == (1, 17, 3) and "2x2 -> 4x4" in note
    np.testing.assert_array_equal(out[0, 0], [7.0, 7.0, 7.0])
    grid = out[0, 1:, 0].reshape(4, 4)  # bilinear, pixel centres: rows at -0.25, 0.25, 0.75, 1.25 (clamped)
    np.testing.assert_allclose(grid, np.repeat(np.array([0.0, 0.25, 0.75, 1.0])[:, None], 4, axis=1), atol=1e-6)

    dropped, note = init_from.resample_posemb(posemb, (1, 4, 3))
    np.testing.assert_array_equal(dropped, posemb[:, 1:])
    assert "class-token row dropped" in note and "grid" not in note
    added, note = init_from.resample_posemb(posemb[:, 1:], (1, 5, 3))
    np.testing.assert_array_equal(added, np.concatenate([np.zeros((1, 1, 3)), posemb[:, 1:]], axis=1))
    assert "added as zeros" in note
    with pytest.raises(ValueError, match="square grid"):
        init_from.resample_posemb(posemb, (1, 7, 3))


def test_new_resolution_classes_and_token_learner_are_reconciled():
    source = init_from.load_source(SAFETENSORS, tiny_model())
    target_config = tiny_model("gap", num_classes=10, token_learner=dict(
        enabled=True, location=1.0, num_tokens=4, version="v1.1", use_fuser=False, bottleneck_dim=64))
    target = abstract_variables(target_config, 24)  # a 6x6 grid instead of 4x4

    with pytest.raises(ValueError, match=r"source parameters with no counterpart[^\n]*\n  cls \[1, 1, 32\]"):
        init_from.reconcile(source, target, init_config())
    values, report = init_from.reconcile(source, target, init_config(exclude=(r"^cls$",)))
    assert report.ignored == ["cls [1, 1, 32]"]
    assert report.adapted == ["posembed_input/pos_embedding: [1, 17, 32] -> [1, 36, 32]: grid 4x4 -> 6x6 "
                              "(bilinear), class-token row dropped (no class token here)"]
    fresh = {line.split(":")[0] for line in report.fresh}
    assert fresh == {"head/kernel", "head/bias"} | {
        f"token_learner/{n}" for n in ("LayerNorm_0/scale", "LayerNorm_0/bias", "token_masking/Dense_0/kernel",
                                       "token_masking/Dense_0/bias", "token_masking/Dense_1/kernel",
                                       "token_masking/Dense_1/bias")}
    source_flat = flat_params(source)
    assert len(report.loaded) == 36
    for name in report.loaded:
        np.testing.assert_array_equal(values[("params", name)], source_flat[name])

    model = models.build(target_config)  # the merged variables run at the new resolution
    merged = jax.tree.map(np.asarray, model.init(jax.random.key(0), jnp.zeros((1, 24, 24, 3))))
    merged = init_from.unflatten({**init_from.flatten(flax.core.meta.unbox(merged)), **values})
    assert model.apply(merged, np.zeros((2, 24, 24, 3), np.float32)).shape == (2, 10)


def test_shapes_that_cannot_be_reconciled_are_named_with_both_shapes():
    source = init_from.load_source(SAFETENSORS, tiny_model())
    with pytest.raises(ValueError) as error:
        init_from.reconcile(source, abstract_variables(tiny_model(mlp_dim=48), 16), init_config())
    message = "encoderblock_0/MlpBlock_3/Dense_0/kernel: source shape [32, 64], target shape [32, 48]"
    assert message in str(error.value)
    missing = r"absent from the source[^\n]*\n(  .*\n)*  encoderblock_2/LayerNorm_0/bias"
    with pytest.raises(ValueError, match=missing):
        init_from.reconcile(source, abstract_variables(tiny_model(depth=3), 16), init_config())


def test_include_loads_only_the_matching_parameters():
    source = init_from.load_source(VITJAX_NPZ, tiny_model())
    values, report = init_from.reconcile(source, abstract_variables(tiny_model(), 16),
                                         init_config(include=(r"^encoderblock_0/",)))
    assert sorted(name for _, name in values) == sorted(report.loaded)
    assert len(report.loaded) == 16 and all(n.startswith("encoderblock_0/") for n in report.loaded)
    assert len(report.fresh) == 40 - 16 and len(report.ignored) == 40 - 16


def test_converter_command_writes_a_checkpoint_with_the_reference_logits(tmp_path):
    flags = [*TINY_FLAGS, "--config.model.token_learner.enabled=False", "--config.model.num_classes=5"]
    # The quickstart classifies by GAP: the source's class token is left over.
    failed = run_python(["-m", "tokenlearner_jax.convert", f"--source={VITJAX_NPZ}",
                         f"--output={tmp_path / 'gap'}", *flags], check=False)
    assert failed.returncode != 0 and "cls [1, 1, 32]" in failed.stderr
    assert not os.path.exists(tmp_path / "gap" / "checkpoints" / "0")

    output = str(tmp_path / "converted")
    run_python(["-m", "tokenlearner_jax.convert", f"--source={VITJAX_NPZ}", f"--output={output}", *flags,
                "--config.model.classifier=token"])
    with open(os.path.join(output, "conversion.json"), encoding="utf-8") as f:
        report = json.load(f)
    assert len(report["loaded"]) == 40 and not report["fresh"] + report["adapted"] + report["ignored"]
    variables, step = init_from.restore_variables(output)
    assert step == 0
    logits = models.build(tiny_model()).apply(variables, IO["images"], train=False)
    np.testing.assert_allclose(np.asarray(logits), IO["logits_token"], atol=1e-4, rtol=0)


def test_a_run_starts_from_a_checkpoint(tmp_path):
    workdir = str(tmp_path / "run")
    config = parse_config([*TINY_FLAGS, "--config.dataset.image_size=24", "--config.model.token_learner.location=1",
                           "--config.num_train_steps=1", "--config.optimizer.learning_rate=0",
                           "--config.batch_size=32", "--config.eval_batch_size=120",
                           f"--config.init_from.path={SAFETENSORS}", "--config.init_from.exclude=('^cls$',)",
                           "--config.ema.decay=0.5"])
    trainer.run(config, workdir)
    with open(os.path.join(workdir, "init_from.json"), encoding="utf-8") as f:
        assert len(json.load(f)["loaded"]) == 36
    # With a zero learning rate the trained checkpoint holds the loaded weights; read it back as a source.
    trained = flat_params(init_from.load_source(workdir, ml_collections.ConfigDict()))
    source = flat_params(init_from.load_source(SAFETENSORS, tiny_model()))
    for name in ("stem/embedding/kernel", "encoderblock_1/MultiHeadDotProductAttention_1/query/kernel",
                 "encoderblock_1/MlpBlock_3/Dense_1/bias", "encoder_norm/scale"):
        np.testing.assert_array_equal(trained[name], source[name])
    # The moving average starts from the loaded weights (and stays there with a zero learning rate).
    _, ema = final_params(workdir, "ema_params")
    np.testing.assert_allclose(ema["encoderblock_1"]["MlpBlock_3"]["Dense_1"]["bias"],
                               source["encoderblock_1/MlpBlock_3/Dense_1/bias"], rtol=1e-6)
    assert trained["posembed_input/pos_embedding"].shape == (1, 36, 32)
    assert trained["head/kernel"].shape == (32, 10) and "token_learner/LayerNorm_0/scale" in trained
