"""NesT: published parameter counts and MACs, blocks that only see themselves, the aggregation, multi-query
attention against NumPy, stochastic depth, TokenLearner at a level, config checks and the recipes."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from helpers import load_config, validate
from tokenlearner_jax import models, recipes
from tokenlearner_jax.layers.attention import MultiHeadAttention
from tokenlearner_jax.models import nest
from tokenlearner_jax.models import flops
from tokenlearner_jax.tasks import optimizer

# Published: params (M) and GMACs at 224, 1000 classes.
PUBLISHED = {"T": (17.06, 5.83), "S": (38.35, 10.35), "B": (67.72, 17.96)}


def abstract_params(model_config, image_size):
    return flops.abstract_variables(models.build(model_config), (image_size, image_size, 3))["params"]


@pytest.mark.parametrize("variant", sorted(PUBLISHED))
def test_parameter_counts_match_the_reference_sheet(variant):
    count = flops.count_params(abstract_params(models.config("nest", variant=variant), 224))
    assert count / 1e6 == pytest.approx(PUBLISHED[variant][0], rel=0.005)


def test_tiny_dot_and_conv_macs_at_224():
    model = models.build(models.config("nest", variant="T"))
    assert flops.matmul_macs(model, (224, 224, 3)) / 1e9 == pytest.approx(PUBLISHED["T"][1], rel=0.02)


@pytest.mark.parametrize("variant,width,heads", [("cifar_T", 192, 3), ("cifar_S", 384, 6), ("cifar_B", 768, 12)])
def test_cifar_variants_have_four_levels_of_three_multi_query_layers(variant, width, heads):
    params = traverse_util.flatten_dict(abstract_params(models.config("nest", variant=variant, num_classes=10), 32), sep="/")
    assert params["patch_embedding/embedding/kernel"].shape == (1, 1, 3, width)
    for level, blocks in enumerate((64, 16, 4, 1)):
        assert params[f"level_{level}/pos_embedding"].shape == (1, blocks, 16, width)
        assert f"level_{level}/encoderblock_2/LayerNorm_0/scale" in params
        assert f"level_{level}/encoderblock_3/LayerNorm_0/scale" not in params
        attention = f"level_{level}/encoderblock_0/MultiHeadDotProductAttention_1"
        assert params[f"{attention}/query/kernel"].shape == (width, heads, width // heads)
        assert params[f"{attention}/key/kernel"].shape == (width, 1, width // heads)
        assert params[f"{attention}/value/kernel"].shape == (width, 1, width // heads)


def tiny_config(**overrides):
    config = models.config("nest", variant="T", num_classes=7)
    config.update(dims=(16, 24, 32), num_heads=(2, 2, 4), depths=(1, 2, 1), patch_size=2)
    for key, value in overrides.items():
        if key.startswith("tl_"):
            config.token_learner[key[3:]] = value
        else:
            config[key] = value
    return config


IMAGES = jnp.asarray(np.random.RandomState(0).randn(2, 32, 32, 3), jnp.float32)


def init_and_apply(config, images=IMAGES, **kwargs):
    model = models.build(config)
    variables = flax.core.meta.unbox(model.init(jax.random.key(0), images))
    out, state = model.apply(variables, images, mutable=["intermediates"], **kwargs)
    return model, variables, out, state["intermediates"]


def test_forward_shapes_and_the_class_activation_map_averages_to_the_logits():
    _, variables, logits, inter = init_and_apply(tiny_config())
    assert logits.shape == (2, 7)
    params = variables["params"]
    assert params["level_0"]["pos_embedding"].shape == (1, 16, 16, 16)  # 16x16 grid, blocks of 4x4
    assert params["level_1"]["pos_embedding"].shape == (1, 4, 16, 24)
    assert params["level_2"]["pos_embedding"].shape == (1, 1, 16, 32)
    assert "aggregation_conv" not in params["level_0"] and "aggregation_norm" in params["level_1"]
    feature_map = inter["feature_map"][0]
    assert feature_map.shape == (2, 4, 4, 32)
    cam = feature_map @ params["head"]["kernel"] + params["head"]["bias"]
    np.testing.assert_allclose(cam.mean(axis=(1, 2)), logits, atol=1e-5)


def test_non_square_inputs_tile_the_top_level_with_several_blocks():
    images = jnp.zeros((1, 32, 64, 3))
    _, variables, logits, inter = init_and_apply(tiny_config(), images)
    assert variables["params"]["level_0"]["pos_embedding"].shape == (1, 32, 16, 16)
    assert variables["params"]["level_2"]["pos_embedding"].shape == (1, 2, 16, 32)
    assert inter["feature_map"][0].shape == (1, 4, 8, 32) and logits.shape == (1, 7)


def level_module(**kwargs):
    return nest.NestLevel(width=8, num_heads=2, mlp_dim=16, drop_path_rates=(0.0, 0.0), side=4, **kwargs)


def test_a_block_only_sees_its_own_inputs():
    """Perturbing the inputs of one 4x4 block of an 8x8 level changes that block's outputs and leaves the
    three other blocks' outputs exactly as they were (attention never crosses a block boundary)."""
    level = level_module(aggregate=False)
    x = jax.random.normal(jax.random.key(1), (2, 8, 8, 8))
    variables = level.init(jax.random.key(2), x, train=False)
    apply = functools.partial(level.apply, train=False)
    perturbed = x.at[:, 4:8, 0:4].add(jax.random.normal(jax.random.key(3), (2, 4, 4, 8)))  # block 2 (row-major)
    y, y2 = np.asarray(apply(variables, x)), np.asarray(apply(variables, perturbed))
    changed = np.abs(y2 - y).max(axis=(0, 3))  # [8, 8]
    assert changed[4:8, 0:4].min() > 1e-3
    changed[4:8, 0:4] = 0
    assert changed.max() == 0.0


def test_a_level_with_one_block_is_global_attention():
    level = nest.NestLevel(width=8, num_heads=2, mlp_dim=16, drop_path_rates=(0.0,), side=8, aggregate=False)
    x = jax.random.normal(jax.random.key(1), (1, 8, 8, 8))
    variables = level.init(jax.random.key(2), x, train=False)
    y = level.apply(variables, x, train=False)
    y2 = level.apply(variables, x.at[:, 0, 0].add(jnp.arange(8.0)), train=False)  # not a constant: LN removes that
    assert np.abs(np.asarray(y2 - y))[0, 7, 7].max() > 1e-4  # the far corner sees the change


def numpy_aggregation(x, conv_kernel, conv_bias, scale, bias, padding):
    """Conv 3x3 (zero padding 1) -> LayerNorm (eps 1e-6) -> max pool 3x3 / 2 with explicit loops."""
    batch, height, width, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    conv = np.zeros((batch, height, width, conv_kernel.shape[-1]))
    for i in range(height):
        for j in range(width):
            conv[:, i, j] = np.einsum("bhwc,hwcd->bd", padded[:, i:i + 3, j:j + 3], conv_kernel) + conv_bias
    mean = conv.mean(-1, keepdims=True)
    normed = (conv - mean) / np.sqrt(conv.var(-1, keepdims=True) + 1e-6) * scale + bias
    before = 0 if padding == "same" else 1  # SAME pads (0, 1) for an even side; symmetric (1, 1)
    pooled = np.full((batch, height // 2, width // 2, normed.shape[-1]), -np.inf)
    for i in range(height // 2):
        for j in range(width // 2):
            for di in range(3):
                for dj in range(3):
                    r, c = 2 * i - before + di, 2 * j - before + dj
                    if 0 <= r < height and 0 <= c < width:
                        pooled[:, i, j] = np.maximum(pooled[:, i, j], normed[:, r, c])
    return pooled


@pytest.mark.parametrize("padding", nest.POOL_PADDINGS)
def test_block_aggregation_against_explicit_loops(padding):
    """The aggregating level with no transformer layers and a zero position embedding is the aggregation."""
    level = nest.NestLevel(width=6, num_heads=2, mlp_dim=8, drop_path_rates=(), side=2, aggregate=True,
                           pool_padding=padding)
    x = jax.random.normal(jax.random.key(4), (2, 8, 8, 4))
    variables = flax.core.meta.unbox(level.init(jax.random.key(5), x, train=False))
    params = jax.tree.map(np.asarray, variables["params"])
    params["pos_embedding"] = np.zeros_like(params["pos_embedding"])
    params["aggregation_norm"]["scale"] = 1 + 0.3 * np.random.RandomState(0).randn(6).astype(np.float32)
    y = level.apply({"params": params}, x, train=False)
    expected = numpy_aggregation(np.asarray(x, np.float64), params["aggregation_conv"]["kernel"],
                                 params["aggregation_conv"]["bias"], params["aggregation_norm"]["scale"],
                                 params["aggregation_norm"]["bias"], padding)
    np.testing.assert_allclose(np.asarray(y), expected, atol=1e-4)


def test_multi_query_attention_against_numpy():
    x = jax.random.normal(jax.random.key(6), (2, 5, 12))
    module = MultiHeadAttention(num_heads=3, num_kv_heads=1)
    params = flax.core.meta.unbox(module.init(jax.random.key(7), x, train=False))["params"]
    assert params["key"]["kernel"].shape == (12, 1, 4) and params["query"]["kernel"].shape == (12, 3, 4)
    out = np.asarray(module.apply({"params": params}, x, train=False))
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    xs = np.asarray(x, np.float64)
    expected = np.zeros_like(xs)
    for b in range(2):
        key = xs[b] @ p["key"]["kernel"][:, 0] + p["key"]["bias"][0]  # the one shared head [5, 4]
        value = xs[b] @ p["value"]["kernel"][:, 0] + p["value"]["bias"][0]
        for h in range(3):
            query = xs[b] @ p["query"]["kernel"][:, h] + p["query"]["bias"][h]
            logits = query @ key.T / 2.0
            weights = np.exp(logits - logits.max(-1, keepdims=True))
            weights /= weights.sum(-1, keepdims=True)
            expected[b] += (weights @ value) @ p["out"]["kernel"][h]
        expected[b] += p["out"]["bias"]
    np.testing.assert_allclose(out, expected, atol=1e-5)
    with pytest.raises(ValueError, match="not a multiple of num_kv_heads"):
        MultiHeadAttention(num_heads=3, num_kv_heads=2).init(jax.random.key(0), x, train=False)


def test_drop_path_rises_linearly_over_all_layers():
    rates = nest.drop_path_rates(0.2, (2, 2, 8))
    np.testing.assert_allclose(np.concatenate(rates), np.linspace(0, 0.2, 12))
    assert [len(r) for r in rates] == [2, 2, 8]
    model = models.build(tiny_config(drop_path_rate=0.3))
    variables = model.init(jax.random.key(0), IMAGES)
    a = model.apply(variables, IMAGES, train=True, rngs={"dropout": jax.random.key(1)})
    b = model.apply(variables, IMAGES, train=True, rngs={"dropout": jax.random.key(2)})
    assert np.abs(np.asarray(a - b)).max() > 0  # stochastic in training
    np.testing.assert_array_equal(model.apply(variables, IMAGES), model.apply(variables, IMAGES))


def test_token_learner_at_the_last_level_and_with_the_fuser_at_the_first():
    _, variables, logits, inter = init_and_apply(tiny_config(tl_enabled=True, tl_num_tokens=4))
    assert logits.shape == (2, 7) and "token_learner" in variables["params"]["level_2"]
    assert inter["feature_map"][0].shape == (2, 1, 4, 32)  # the learned tokens
    _, variables, logits, inter = init_and_apply(tiny_config(tl_enabled=True, tl_location=0, tl_use_fuser=True))
    assert "token_fuser" in variables["params"]["level_0"]["token_learner"]
    assert inter["feature_map"][0].shape == (2, 4, 4, 32)
    # The fuser starts as the identity, so the level's grid keeps its shape and later levels run as usual.
    with pytest.raises(ValueError, match="token_learner.location=0"):
        models.build(tiny_config(tl_enabled=True, tl_location=0))


def full_config(model, image_size=32):
    config = recipes.base()
    config.model = model
    config.dataset.image_size = image_size
    return config


@pytest.mark.parametrize("field,value,message", [
    ("variant", "Q", "config.model.variant='Q'"),
    ("pool_padding", "valid", "config.model.pool_padding='valid'"),
    ("num_kv_heads", 3, "config.model.num_kv_heads=3"),
    ("dims", (16, 25, 32), "config.model.num_heads=(2, 2, 4): expected divisors of the level widths"),
    ("depths", (1, 1), "config.model.dims=(16, 24, 32): expected positive values, one of each per level"),
])
def test_bad_model_values_are_named(field, value, message):
    config = full_config(tiny_config())
    config.model[field] = value
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        validate(config)


def test_image_size_must_fit_the_levels():
    config = full_config(tiny_config(), image_size=36)
    with pytest.raises(ValueError, match=r"config.dataset.image_size=36: expected a multiple of .* = 8"):
        validate(config)


@pytest.mark.parametrize("name,variant,drop_path", [("nest_tiny", "T", 0.2), ("nest_small", "S", 0.3),
                                                    ("nest_base", "B", 0.5)])
def test_imagenet_recipes(name, variant, drop_path):
    config = load_config(f"{name}.py")
    validate(config)
    assert (config.model.name, config.model.variant) == ("nest", variant)
    assert models.build(config.model).drop_path_rate == drop_path  # the variant's, worked out at build time
    assert (config.batch_size, config.num_epochs, config.label_smoothing) == (1024, 300.0, 0.1)
    assert config.optimizer.learning_rate == pytest.approx(2.5e-4 * 1024 / 256)
    assert config.optimizer.warmup_steps == round(20 * 1_281_167 / 1024)
    assert (config.optimizer.name, config.optimizer.decay, config.optimizer.weight_decay) == ("adamw", "cosine", 0.05)
    assert (config.mixup.mixup_alpha, config.mixup.cutmix_alpha) == (0.8, 1.0)
    assert (config.dataset.randaugment_num_ops, config.dataset.randaugment_magnitude) == (2, 9.0)
    assert config.dataset.random_erasing_prob == 0.25
    assert load_config(f"{name}.py", "512").optimizer.learning_rate == pytest.approx(5e-4)


def test_weight_decay_spares_only_the_position_embeddings():
    config = load_config("nest_tiny.py")
    abstract = abstract_params(config.model, 224)
    mask = traverse_util.flatten_dict(optimizer.weight_decay_mask(abstract, config.optimizer.weight_decay_exclude),
                                      sep="/")
    spared = {path for path, on in mask.items() if not on}
    assert spared == {f"level_{i}/pos_embedding" for i in range(3)}


@pytest.mark.parametrize("name,variant", [("nest_cifar_tiny", "cifar_T"), ("nest_cifar_small", "cifar_S"),
                                          ("nest_cifar_base", "cifar_B")])
def test_cifar_recipes(name, variant):
    config = load_config(f"{name}.py")
    validate(config)
    assert (config.model.variant, config.model.num_classes) == (variant, 10)
    assert models.build(config.model).drop_path_rate == 0.1
    assert (config.dataset.name, config.dataset.image_size) == ("cifar10", 32)
    assert config.optimizer.warmup_steps == round(5 * 50_000 / 1024)
    assert load_config(f"{name}.py", "cifar100").model.num_classes == 100
