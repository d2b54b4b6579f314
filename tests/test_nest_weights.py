"""timm NesT weights (weights/nest.py): parity with timm's logits on committed fixtures
(experiments/make_nest_fixtures.py) under both max-pool paddings, through the converter's reconcile
step, the full-size nest_*_jx layouts, TokenLearner added to timm's weights, and every refusal."""

import json
import os

import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from helpers import ROOT
from tokenlearner_jax import convert, recipes, models
from tokenlearner_jax import weights
from tokenlearner_jax.models import flops
from tokenlearner_jax.weights import nest as nest_weights
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
SAFETENSORS = os.path.join(FIXTURES, "nest_tiny.safetensors")


def load_tiny():
    tensors = safetensors.numpy.load_file(SAFETENSORS)
    io = dict(np.load(os.path.join(FIXTURES, "nest_tiny_io.npz")))
    config = models.config("nest", variant="T", num_classes=io["logits_same"].shape[-1])
    config.update(dims=tuple(int(d) for d in io["dims"]), num_heads=tuple(int(h) for h in io["num_heads"]),
                  depths=tuple(int(d) for d in io["depths"]), patch_size=int(io["patch_size"]))
    return tensors, io, config


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_converted_tiny_model_reproduces_timms_logits(padding):
    tensors, io, config = load_tiny()
    config.pool_padding = padding
    variables = nest_weights.from_safetensors(tensors, config)
    logits = np.asarray(models.build(config).apply(variables, io["images"]))
    np.testing.assert_allclose(logits, io[f"logits_{padding}"], atol=1e-4, rtol=0)
    assert np.abs(io[f"logits_{padding}"]).max() > 0.5  # far from trivial


def test_the_two_paddings_give_different_logits():
    """Why pool_padding is a config field: timm's nest_* and nest_*_jx differ by more than the tolerance."""
    _, io, _ = load_tiny()
    assert np.abs(io["logits_same"] - io["logits_symmetric"]).max() > 1e-2


def test_the_converter_is_found_by_model_name():
    assert weights.converter("nest", "safetensors") is nest_weights.from_safetensors


@pytest.mark.parametrize("timm_name,variant", [("nest_tiny_jx", "T"), ("nest_small_jx", "S"), ("nest_base_jx", "B")])
def test_the_full_size_layouts_map_completely(timm_name, variant):
    """Every tensor of timm's full-size state dict (names and shapes recorded from timm) lands on a
    parameter of ours with the same shape, and every parameter of ours is covered."""
    with open(os.path.join(FIXTURES, "nest_keys.json"), encoding="utf-8") as f:
        layout = json.load(f)["models"][timm_name]
    tensors = {name: np.zeros(shape, np.float32) for name, shape in layout.items()}
    config = models.config("nest", variant=variant)
    params = nest_weights.from_safetensors(tensors, config)["params"]
    ours = flops.abstract_variables(models.build(config), (224, 224, 3))["params"]
    shapes = lambda tree: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
    assert shapes(params) == shapes(ours)
    assert sum(int(np.prod(s)) for s in layout.values()) == flops.count_params(ours)


def test_a_leftover_tensor_is_named():
    tensors, _, config = load_tiny()
    tensors["levels.0.transformer_encoder.0.attn.extra.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=r"levels\.0\.transformer_encoder\.0\.attn\.extra\.weight"):
        nest_weights.from_safetensors(tensors, config)


def test_a_checkpoint_deeper_than_the_config_leaves_tensors_over():
    tensors, _, config = load_tiny()
    config.depths = (1, 1, 1)  # the fixture's last level has two layers
    with pytest.raises(ValueError, match=r"levels\.2\.transformer_encoder\.1\."):
        nest_weights.from_safetensors(tensors, config)


def test_a_missing_tensor_is_named():
    tensors, _, config = load_tiny()
    del tensors["levels.1.pool.norm.weight"]
    with pytest.raises(ValueError, match=r"missing tensor 'levels\.1\.pool\.norm\.weight'"):
        nest_weights.from_safetensors(tensors, config)


def test_multi_query_models_are_refused():
    tensors, _, config = load_tiny()
    config.num_kv_heads = 1
    with pytest.raises(ValueError, match="no multi-query attention"):
        nest_weights.from_safetensors(tensors, config)


def full_config(model_config):
    config = recipes.base()
    config.dataset.image_size = 32
    config.model = model_config
    return config


def test_through_the_converter_path_the_logits_still_match():
    _, io, model_config = load_tiny()
    config = full_config(model_config)
    source = init_from.load_source(SAFETENSORS, config.model)
    target = convert.initial_variables(config)
    values, report = init_from.reconcile(source, target, config.init_from)
    assert not report.fresh and not report.adapted and not report.ignored
    flat = init_from.flatten(target)
    flat.update(values)
    logits = models.build(config.model).apply(init_from.unflatten(flat), io["images"])
    np.testing.assert_allclose(np.asarray(logits), io["logits_same"], atol=1e-4, rtol=0)


def test_token_learner_at_the_last_level_starts_fresh_on_timms_weights():
    _, _, model_config = load_tiny()
    model_config.token_learner.update(enabled=True, num_tokens=4)
    config = full_config(model_config)
    source = init_from.load_source(SAFETENSORS, config.model)
    _, report = init_from.reconcile(source, convert.initial_variables(config), config.init_from)
    assert report.fresh and all("level_2/token_learner/" in name for name in report.fresh)
    assert not report.ignored
