"""ViT and ViT + TokenLearner: published parameter counts (jax.eval_shape), shapes, placement, dtypes."""

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokenlearner_jax import models
from tokenlearner_jax.models import flops

# Published (timm's counts, 1000 classes, class token).
PUBLISHED_PARAMS_M = {"S/16": 22.05, "B/16": 86.57, "B/32": 88.22, "L/16": 304.33}


@pytest.mark.parametrize("variant", sorted(PUBLISHED_PARAMS_M))
def test_parameter_counts_match_the_reference_sheet(variant):
    model = models.build(models.config("vit", variant=variant, classifier="token"))
    count = flops.count_params(flops.abstract_variables(model, (224, 224, 3))["params"])
    assert count / 1e6 == pytest.approx(PUBLISHED_PARAMS_M[variant], abs=0.006)


def test_token_learner_adds_only_its_own_parameters():
    def count(**token_learner):
        model = models.build(models.config("vit", variant="B/16", token_learner=token_learner))
        return flops.count_params(flops.abstract_variables(model, (224, 224, 3))["params"])

    # v1.1: LayerNorm (2*768) + Dense 768->64 + Dense 64->8, with biases.
    assert count(enabled=True, num_tokens=8) - count() == 2 * 768 + 768 * 64 + 64 + 64 * 8 + 8


def tiny_config(**overrides):
    config = models.config("vit", variant="S/4", num_classes=7, classifier="gap")
    config.width, config.depth, config.num_heads, config.mlp_dim = 32, 4, 2, 64
    for key, value in overrides.items():
        if key.startswith("tl_"):
            config.token_learner[key[3:]] = value
        else:
            config[key] = value
    return config


@pytest.mark.parametrize("classifier", ["gap", "token"])
@pytest.mark.parametrize("version", ["v1.1", "v1.0"])
@pytest.mark.parametrize("use_fuser", [False, True])
def test_forward_shapes_with_token_learner(classifier, version, use_fuser):
    config = tiny_config(classifier=classifier, tl_enabled=True, tl_location=0.5, tl_num_tokens=3,
                         tl_version=version, tl_use_fuser=use_fuser)
    model = models.build(config)
    images = jnp.asarray(np.random.RandomState(0).randn(2, 16, 24, 3), jnp.float32)  # non-square 4x6 grid
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    logits, state = model.apply(variables, images, train=False, mutable=["intermediates"])
    assert logits.shape == (2, 7)
    assert np.all(np.isfinite(np.asarray(logits)))
    inter = state["intermediates"]
    learners = [k for k in inter if k.startswith("token_learner")]
    # Without the fuser TokenLearner runs once; with it, before every layer from the location on.
    assert len(learners) == (2 if use_fuser else 1)
    assert inter[learners[0]]["token_attention"][0].shape == (2, 3, 24)
    # The blocks after TokenLearner attend over 3 tokens (+1 class token), the ones before over 24.
    attention = lambda i: inter[f"encoderblock_{i}"]["MultiHeadDotProductAttention_1"]["attention_weights"][0]
    prefix = 1 if classifier == "token" else 0
    assert attention(1).shape[-1] == 24 + prefix
    assert attention(2).shape[-1] == 3 + prefix


def test_fuser_layers_start_as_identity_on_patch_tokens():
    """With the fuser, each fused layer's patch-token output equals its input at initialisation."""
    config = tiny_config(tl_enabled=True, tl_location=2, tl_use_fuser=True)
    model = models.build(config)
    images = jnp.asarray(np.random.RandomState(1).randn(1, 16, 16, 3), jnp.float32)
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    with_fuser = model.apply(variables, images)
    plain = models.build(tiny_config(depth=2))  # the same first two layers, no later layers
    pruned = {"params": {k: v for k, v in variables["params"].items()
                         if not k.startswith(("token_", "encoderblock_2", "encoderblock_3"))}}
    np.testing.assert_allclose(np.asarray(with_fuser), np.asarray(plain.apply(pruned, images)), atol=1e-5)


def test_token_learner_halves_the_macs_of_vit_b16():
    base = models.build(models.config("vit", variant="B/16"))
    half = models.build(models.config("vit", variant="B/16", token_learner=dict(enabled=True, location=0.5, num_tokens=8)))
    ratio = flops.forward_macs(half, (224, 224, 3)) / flops.forward_macs(base, (224, 224, 3))
    # Paper's bar chart: about 9.2 against 17.6 GMACs.
    assert 0.5 < ratio < 0.56


def test_bfloat16_compute_keeps_float32_parameters():
    config = tiny_config(dtype="bfloat16", tl_enabled=True)
    model = models.build(config)
    images = jnp.ones((2, 16, 16, 3))
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    assert {x.dtype for x in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    assert model.apply(variables, images).dtype == jnp.float32


def test_dropout_and_drop_path_change_training_outputs_only():
    config = tiny_config(dropout_rate=0.2, drop_path_rate=0.3, tl_enabled=True)
    model = models.build(config)
    images = jnp.asarray(np.random.RandomState(2).randn(4, 16, 16, 3), jnp.float32)
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    leaves, treedef = jax.tree.flatten(variables)  # random values everywhere, so the zero-initialised head is not
    rng = np.random.RandomState(3)
    variables = jax.tree.unflatten(treedef, [x + 0.1 * rng.randn(*x.shape) for x in leaves])
    eval_a, eval_b = model.apply(variables, images), model.apply(variables, images)
    np.testing.assert_array_equal(np.asarray(eval_a), np.asarray(eval_b))
    train = model.apply(variables, images, train=True, rngs={"dropout": jax.random.key(1)})
    assert not np.allclose(np.asarray(train), np.asarray(eval_a))


def test_registry_rejects_unknown_models():
    with pytest.raises(ValueError, match="not a registered model"):
        models.build(ml_collections.ConfigDict({"name": "resnet"}))
    with pytest.raises(ValueError, match="variant"):
        models.build(models.config("vit", variant="X/16"))
