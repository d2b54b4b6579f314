"""PoolFormer / MetaFormer: published parameter counts and MACs, mixers per stage, TokenLearner in a
stage, stochastic depth, head variants and config checks."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax import models
from tokenlearner_jax.layers.attention import DropPath
from tokenlearner_jax.models import flops

# Published (timm's counts, 1000 classes) and GMACs at 224.
PUBLISHED = {"S12": (11.92, 1.82), "S24": (21.39, 3.41), "S36": (30.86, 5.00), "M36": (56.17, 8.80),
             "M48": (73.47, 11.59)}


def num_params(model_config, image_size=224):
    model = models.build(model_config)
    return flops.count_params(flops.abstract_variables(model, (image_size, image_size, 3))["params"])


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_parameter_counts_match_the_reference_sheet(variant):
    count = num_params(models.config("poolformer", variant=variant))
    assert count / 1e6 == pytest.approx(PUBLISHED[variant][0], rel=0.005)


def test_the_papers_hybrid_ablation_has_its_published_size():
    # Pooling in stages 1-2, attention in stages 3-4 (S12 body): 16.5M parameters (paper, Table 6).
    count = num_params(models.config("poolformer", variant="S12", mixers=("pooling", "pooling", "attention", "attention")))
    assert count / 1e6 == pytest.approx(16.5, rel=0.005)


def test_s12_macs_at_224():
    model = models.build(models.config("poolformer", variant="S12"))
    matmul = flops.matmul_macs(model, (224, 224, 3))
    assert matmul / 1e9 == pytest.approx(PUBLISHED["S12"][1], rel=0.02)
    # XLA's count adds the element-wise work, almost all of it exact GELU (XLA counts erf's polynomial as
    # 32 MACs per element; S12 has 4.1M hidden activations): about 8% on top for S12.
    xla = flops.forward_macs(model, (224, 224, 3))
    assert 1.0 < xla / matmul < 1.1


def tiny_config(**overrides):
    config = models.config("poolformer", variant="S12", num_classes=7)
    config.depths, config.dims = (1, 2, 1, 1), (32, 32, 64, 64)
    for key, value in overrides.items():
        if key.startswith("tl_"):
            config.token_learner[key[3:]] = value
        else:
            config[key] = value
    return config


def init_and_apply(config, images, **apply_kwargs):
    model = models.build(config)
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    out, state = model.apply(variables, images, mutable=["intermediates"], **apply_kwargs)
    return model, variables, out, state["intermediates"]


IMAGES = jnp.asarray(np.random.RandomState(0).randn(2, 72, 56, 3), jnp.float32)  # grids 18x14 .. 3x2


@pytest.mark.parametrize("mixers", [
    ("pooling",), ("identity",), ("attention",), ("depthwise_conv",), ("spatial_mlp",),
    ("pooling", "pooling", "attention", "attention"),
])
def test_forward_with_each_mixer(mixers):
    _, variables, logits, inter = init_and_apply(tiny_config(mixers=mixers), IMAGES)
    assert logits.shape == (2, 7) and np.all(np.isfinite(np.asarray(logits)))
    assert inter["pre_logits"][0].shape == (2, 64)
    per_stage = mixers * 4 if len(mixers) == 1 else mixers
    for i, mixer in enumerate(per_stage):
        block = variables["params"][f"stage_{i}"]["block_0"]
        assert ("token_mixer" in block) == (mixer not in ("pooling", "identity"))


def test_identity_and_pooling_mixers_share_parameters_but_not_outputs():
    _, variables, pooled, _ = init_and_apply(tiny_config(layer_scale_init=0.5), IMAGES)
    identity = models.build(tiny_config(layer_scale_init=0.5, mixers=("identity",)))
    assert not np.allclose(np.asarray(identity.apply(variables, IMAGES)), np.asarray(pooled), atol=1e-4)


def test_stage_grids_and_downsampling():
    model = models.build(tiny_config())
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), IMAGES))
    params = variables["params"]
    assert params["stem"]["kernel"].shape == (7, 7, 3, 32)
    assert "downsample" not in params["stage_0"]
    assert params["stage_2"]["downsample"]["kernel"].shape == (3, 3, 32, 64)
    assert params["stage_1"]["block_1"]["mlp"]["Dense_0"]["kernel"].shape == (32, 128)  # MLP ratio 4
    assert params["stage_3"]["block_0"]["layer_scale_1"].shape == (64,)
    grids = []
    for i in range(4):  # the grid each stage's blocks see, from the attention maps of an attention mixer
        config = tiny_config(mixers=tuple("attention" if j == i else "pooling" for j in range(4)))
        _, _, _, inter = init_and_apply(config, IMAGES)
        weights = inter[f"stage_{i}"]["block_0"]["token_mixer"]["attention"]["attention_weights"][0]
        grids.append(weights.shape[-1])
    assert grids == [18 * 14, 9 * 7, 5 * 4, 3 * 2]


def test_layer_scale_init_defaults_to_the_variant():
    for variant, value in (("S24", 1e-5), ("M36", 1e-6)):
        config = models.config("poolformer", variant=variant)
        config.depths, config.dims = (1,), (8,)
        model = models.build(config)
        params = flax.core.meta.unbox(model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3))))["params"]
        np.testing.assert_allclose(np.asarray(params["stage_0"]["block_0"]["layer_scale_2"]), value)


def test_drop_path_rises_linearly_over_all_blocks():
    config = tiny_config(drop_path_rate=0.3)  # 5 blocks: 0, 0.075, ..., 0.3
    model = models.build(config)
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), IMAGES))
    rates = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, DropPath):
            rates.setdefault(context.module.scope.path[:2], set()).add(context.module.rate)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        train = model.apply(variables, IMAGES, train=True, rngs={"dropout": jax.random.key(1)})
    assert [rate for _, (rate,) in sorted(rates.items())] == pytest.approx(np.linspace(0, 0.3, 5))
    assert not np.allclose(np.asarray(train), np.asarray(model.apply(variables, IMAGES)))


@pytest.mark.parametrize("use_fuser", [False, True])
@pytest.mark.parametrize("stage", [1, 3])
def test_token_learner_in_a_stage(use_fuser, stage):
    config = tiny_config(mixers=("attention",), tl_enabled=True, tl_location=stage, tl_num_tokens=4,
                         tl_use_fuser=use_fuser)
    _, variables, logits, inter = init_and_apply(config, IMAGES)
    assert logits.shape == (2, 7)
    assert set(variables["params"][f"stage_{stage}"]["token_learner"]) == (
        {"token_learner", "token_fuser"} if use_fuser else {"token_learner"})
    attention = lambda i: inter[f"stage_{i}"]["block_0"]["token_mixer"]["attention"]["attention_weights"][0]
    grid_sizes = [18 * 14, 9 * 7, 5 * 4, 3 * 2]
    assert attention(stage).shape[-1] == 4  # the stage attends over the 4 learned tokens
    if stage == 1:  # after it: the grid again with the fuser; else the 1 x 4 token row, halved by the conv
        assert attention(2).shape[-1] == (grid_sizes[2] if use_fuser else 2)


def test_fused_token_learner_stage_starts_as_the_identity():
    """With the fuser and the stage's layer scales at 0, the stage's blocks add nothing, and the zero-
    initialised fuser adds nothing: the logits equal those of the model with the stage's blocks skipped."""
    config = tiny_config(tl_enabled=True, tl_location=3, tl_use_fuser=True, layer_scale_init=1e-30)
    _, variables, with_tl, _ = init_and_apply(config, IMAGES)
    plain = models.build(tiny_config(layer_scale_init=1e-30))
    params = dict(variables["params"])
    params["stage_3"] = {k: v for k, v in params["stage_3"].items() if k != "token_learner"}
    np.testing.assert_allclose(np.asarray(with_tl), np.asarray(plain.apply({"params": params}, IMAGES)), atol=1e-5)


def test_token_learner_shrinks_the_last_stage_macs():
    base = models.config("poolformer", variant="S12")
    tl = models.config("poolformer", variant="S12", token_learner=dict(enabled=True, location=3, num_tokens=8))
    base_macs = flops.matmul_macs(models.build(base), (224, 224, 3))
    tl_macs = flops.matmul_macs(models.build(tl), (224, 224, 3))
    # Stage 4's blocks (2 x 49 positions x 8 x 512^2 MACs) now see 8 tokens instead of 7 x 7.
    blocks = 2 * 8 * 512 ** 2
    learner = 49 * (512 * 64 + 64 * 8) + 8 * 49 * 512
    assert base_macs - tl_macs == pytest.approx(blocks * (49 - 8) - learner, rel=1e-6)


def test_head_norms_share_parameters_and_differ_in_order():
    _, variables, group, _ = init_and_apply(tiny_config(), IMAGES)
    pooled = models.build(tiny_config(head_norm="pooled_layer_norm")).apply(variables, IMAGES)
    assert pooled.shape == group.shape and not np.allclose(np.asarray(pooled), np.asarray(group), atol=1e-4)


def test_features_without_classes():
    _, _, features, _ = init_and_apply(tiny_config(num_classes=0), IMAGES)
    assert features.shape == (2, 64)


@pytest.mark.parametrize("override, message", [
    (dict(variant="S10"), "config.model.variant='S10'"),
    (dict(mixers=("pooling", "attention")), "config.model.mixers"),
    (dict(mixers=("convolution",)), "config.model.mixers"),
    (dict(dims=(8, 16)), "config.model.depths"),
    (dict(head_norm="batch_norm"), "config.model.head_norm='batch_norm'"),
    (dict(tl_enabled=True, tl_location=4), "config.model.token_learner.location=4"),
])
def test_bad_model_configs_name_the_field(override, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.build(tiny_config(**override))


def test_bfloat16_compute_keeps_float32_parameters():
    config = tiny_config(dtype="bfloat16", mixers=("pooling", "attention", "depthwise_conv", "spatial_mlp"),
                         tl_enabled=True, tl_location=2, tl_use_fuser=True)
    _, variables, logits, _ = init_and_apply(config, IMAGES)
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    assert logits.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(logits)))
