"""timm PoolFormer weights (weights/poolformer.py): parity with timm's logits on committed fixtures
(experiments/make_poolformer_fixtures.py), directly and through the converter's reconcile step, the
full-size poolformer_s12 layout, TokenLearner added to timm's weights, and every refusal."""

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
from tokenlearner_jax.weights import poolformer as poolformer_weights
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def load_tiny():
    tensors = safetensors.numpy.load_file(os.path.join(FIXTURES, "poolformer_tiny.safetensors"))
    io = dict(np.load(os.path.join(FIXTURES, "poolformer_tiny_io.npz")))
    config = models.config("poolformer", variant="S12", num_classes=io["logits"].shape[-1])
    config.depths = tuple(int(d) for d in io["depths"])
    config.dims = tuple(int(d) for d in io["dims"])
    config.head_norm = "pooled_layer_norm"
    return tensors, io, config


def test_converted_tiny_model_reproduces_timms_logits():
    tensors, io, config = load_tiny()
    variables = poolformer_weights.from_safetensors(tensors, config)
    logits = np.asarray(models.build(config).apply(variables, io["images"]))
    np.testing.assert_allclose(logits, io["logits"], atol=1e-4, rtol=0)
    assert np.abs(io["logits"]).max() > 0.5  # the fixture's logits are far from trivial
    # The layer scales were randomised, not left at their 1e-5 initial value.
    scale = variables["params"]["stage_1"]["block_1"]["layer_scale_2"]
    assert np.abs(scale).min() > 0.1


def test_the_papers_head_order_gives_different_logits_on_timms_weights():
    """Why the converter insists on head_norm='pooled_layer_norm': the same parameters under the
    GroupNorm-then-pool head move the logits by far more than the parity tolerance."""
    tensors, io, config = load_tiny()
    variables = poolformer_weights.from_safetensors(tensors, config)
    config.head_norm = "group_norm"
    logits = np.asarray(models.build(config).apply(variables, io["images"]))
    assert np.abs(logits - io["logits"]).max() > 1e-2


def test_the_converter_is_found_by_model_name():
    assert weights.converter("poolformer", "safetensors") is poolformer_weights.from_safetensors


def test_the_full_size_s12_layout_maps_completely():
    """Every tensor of timm's poolformer_s12 state dict (names and shapes recorded from timm) lands on
    a parameter of our S12 with the same shape, and every parameter of ours is covered."""
    with open(os.path.join(FIXTURES, "poolformer_s12_keys.json"), encoding="utf-8") as f:
        layout = json.load(f)["tensors"]
    tensors = {name: np.zeros(shape, np.float32) for name, shape in layout.items()}
    config = models.config("poolformer", variant="S12", num_classes=1000)
    config.head_norm = "pooled_layer_norm"
    params = poolformer_weights.from_safetensors(tensors, config)["params"]
    ours = flops.abstract_variables(models.build(config), (224, 224, 3))["params"]
    shapes = lambda tree: {k: tuple(v.shape) for k, v in traverse_util.flatten_dict(tree, sep="/").items()}
    assert shapes(params) == shapes(ours)
    assert sum(int(np.prod(s)) for s in layout.values()) == 11_915_176


def test_a_leftover_tensor_is_named():
    tensors, _, config = load_tiny()
    tensors["stages.0.blocks.0.token_mixer.extra.weight"] = np.zeros((3,), np.float32)
    with pytest.raises(ValueError, match=r"stages\.0\.blocks\.0\.token_mixer\.extra\.weight"):
        poolformer_weights.from_safetensors(tensors, config)


def test_a_checkpoint_deeper_than_the_config_leaves_tensors_over():
    tensors, _, config = load_tiny()
    config.depths = (1, 1, 1, 1)  # the fixture's stage 1 has two blocks
    with pytest.raises(ValueError, match=r"stages\.1\.blocks\.1\."):
        poolformer_weights.from_safetensors(tensors, config)


def test_a_missing_tensor_is_named():
    tensors, _, config = load_tiny()
    del tensors["stages.2.blocks.0.layer_scale1.scale"]
    with pytest.raises(ValueError, match=r"missing tensor 'stages\.2\.blocks\.0\.layer_scale1\.scale'"):
        poolformer_weights.from_safetensors(tensors, config)


def test_the_papers_head_order_is_refused():
    tensors, _, config = load_tiny()
    config.head_norm = "group_norm"
    with pytest.raises(ValueError, match="--config.model.head_norm=pooled_layer_norm"):
        poolformer_weights.from_safetensors(tensors, config)


def full_config(model_config):
    config = recipes.base()
    config.dataset.image_size = 64
    config.model = model_config
    return config


def test_through_the_converter_path_the_logits_still_match():
    """init_from.load_source (what `python -m tokenlearner_jax.convert` and `config.init_from` read with)
    finds our map by model name; reconcile checks every shape against the model and fills all of it."""
    _, io, model_config = load_tiny()
    config = full_config(model_config)
    source = init_from.load_source(os.path.join(FIXTURES, "poolformer_tiny.safetensors"), config.model)
    target = convert.initial_variables(config)
    values, report = init_from.reconcile(source, target, config.init_from)
    assert not report.fresh and not report.adapted and not report.ignored
    flat = init_from.flatten(target)
    flat.update(values)
    logits = models.build(config.model).apply(init_from.unflatten(flat), io["images"])
    np.testing.assert_allclose(np.asarray(logits), io["logits"], atol=1e-4, rtol=0)


def test_token_learner_in_stage_4_starts_fresh_on_timms_weights():
    """PoolFormer + TokenLearner (with fuser) before stage 4 from a timm checkpoint: the stage's blocks
    keep their names, so only the TokenLearner / TokenFuser parameters are new."""
    _, _, model_config = load_tiny()
    model_config.token_learner.update(enabled=True, location=3, num_tokens=4, use_fuser=True)
    config = full_config(model_config)
    config.init_from.fresh_if_missing = ("/token_learner/",)
    source = init_from.load_source(os.path.join(FIXTURES, "poolformer_tiny.safetensors"), config.model)
    _, report = init_from.reconcile(source, convert.initial_variables(config), config.init_from)
    assert report.fresh and all("stage_3/token_learner/" in name for name in report.fresh)
    assert any("token_fuser" in name for name in report.fresh) and not report.ignored
    config.init_from.fresh_if_missing = ()
    with pytest.raises(ValueError, match="token_learner"):
        init_from.reconcile(source, convert.initial_variables(config), config.init_from)


def test_widths_that_do_not_fit_the_config_are_reported():
    _, _, model_config = load_tiny()
    model_config.dims = (8, 16, 24, 48)
    config = full_config(model_config)
    source = init_from.load_source(os.path.join(FIXTURES, "poolformer_tiny.safetensors"), config.model)
    with pytest.raises(ValueError, match="stage_3/block_0/norm_1/scale"):
        init_from.reconcile(source, convert.initial_variables(config), config.init_from)
