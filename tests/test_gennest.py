"""GenNesT and its SAGAN-style baseline: parameter counts of every variant against closed forms (shapes
only), pixel shuffle against a loop, de-aggregation followed by NesT's aggregation round-tripping the
shapes, output shapes and ranges, spectral normalisation against NumPy's SVD, SAGAN's self-attention
against NumPy, and config errors."""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import meta

from tokenlearner_jax import models
from tokenlearner_jax.layers.blocking import block_partition
from tokenlearner_jax.models import flops, gennest, nest, sagan_discriminator, sagan_generator
from tokenlearner_jax.models.sagan_layers import SelfAttention


NAMES = {gennest: "gennest", sagan_generator: "sagan_generator", sagan_discriminator: "sagan_discriminator"}


def config_of(module, variant, **overrides):
    return models.config(NAMES[module], variant=variant, **overrides)


def abstract_params(model, input_shape):
    return jax.eval_shape(lambda: meta.unbox(model.init(jax.random.key(0), jnp.zeros(input_shape), train=False)))


def gennest_closed_form(latent, dims, depths, side, patch):
    """Parameters of GenNesT counted by hand: projections, position embeddings, encoder blocks
    (2 LayerNorms 4d, attention 4d^2 + 4d, MLP 8d^2 + 5d), de-aggregations (conv 3x3 to 4d, LayerNorm)."""
    count = latent * side * side * dims[0] + side * side * dims[0]
    for i, (d, depth) in enumerate(zip(dims, depths)):
        count += 4 ** i * side * side * d + depth * (12 * d * d + 13 * d)
        if i:
            count += 9 * dims[i - 1] * 4 * d + 4 * d + 2 * d
    return count + 2 * dims[-1] + dims[-1] * patch * patch * 3 + patch * patch * 3


@pytest.mark.parametrize("variant", sorted(gennest.VARIANTS))
def test_gennest_parameter_counts_match_the_closed_form(variant):
    latent, dims, _, depths, side, patch = gennest.VARIANTS[variant]
    model = gennest.build_gennest(config_of(gennest, variant))
    count = flops.count_params(abstract_params(model, (1, latent))["params"])
    assert count == gennest_closed_form(latent, dims, depths, side, patch)
    print(f"gennest {variant}: {count / 1e6:.2f}M parameters, {model.image_size}x{model.image_size} images")


@pytest.mark.parametrize("gennest_variant,sagan_variant,tolerance", [("imagenet64", "64", 0.05), ("tiny", "tiny", 0.1),
                                                                   ("digits", "digits", 0.05)])
def test_the_sagan_baseline_has_about_the_parameters_of_gennest(gennest_variant, sagan_variant, tolerance):
    g = gennest.build_gennest(config_of(gennest, gennest_variant))
    s = sagan_generator.build_sagan_generator(config_of(sagan_generator, sagan_variant))
    assert g.image_size == s.image_size
    ours = flops.count_params(abstract_params(g, (1, g.latent_dim))["params"])
    theirs = flops.count_params(abstract_params(s, (1, s.latent_dim))["params"])
    assert abs(theirs / ours - 1) < tolerance, (ours, theirs)


def test_pixel_shuffle_matches_a_loop():
    x = np.random.default_rng(0).normal(size=(2, 3, 4, 2 * 2 * 5)).astype(np.float32)
    expected = np.zeros((2, 6, 8, 5), np.float32)
    for h in range(3):
        for w in range(4):
            for i in range(2):
                for j in range(2):
                    expected[:, 2 * h + i, 2 * w + j] = x[:, h, w, (i * 2 + j) * 5:(i * 2 + j + 1) * 5]
    np.testing.assert_array_equal(np.asarray(gennest.depth_to_space(jnp.asarray(x), 2)), expected)
    with pytest.raises(ValueError, match="not a multiple of 2"):
        gennest.depth_to_space(jnp.zeros((1, 2, 2, 6)), 2)


def test_deaggregation_then_nest_aggregation_round_trips_the_shapes():
    side, width, next_width = 4, 32, 16
    grid = jax.ShapeDtypeStruct((2, side, side, width), jnp.float32)
    deaggregation = gennest.BlockDeaggregation(next_width)
    finer = jax.eval_shape(lambda x: deaggregation.init_with_output(jax.random.key(0), x)[0], grid)
    assert finer.shape == (2, 2 * side, 2 * side, next_width)
    # One block becomes the 2x2 group of blocks it would be aggregated from...
    assert jax.eval_shape(lambda x: block_partition(x, side), finer).shape == (2, 4, side * side, next_width)
    # ... and NesT's aggregation (conv, LayerNorm, max pool) brings the grid back.
    level = nest.NestLevel(width, 2, 4 * width, (0.0,), side, aggregate=True)
    coarser = jax.eval_shape(lambda x: level.init_with_output(jax.random.key(0), x, train=False)[0], finer)
    assert coarser.shape == grid.shape


@functools.cache
def tiny_generator_output():
    model = gennest.build_gennest(config_of(gennest, "tiny"))
    latents = jax.random.normal(jax.random.key(1), (3, model.latent_dim))
    variables = jax.jit(lambda: model.init(jax.random.key(0), latents))()
    return model, variables, jax.jit(lambda v, z: model.apply(v, z))(variables, latents)


def test_gennest_makes_images_in_the_tanh_range_from_the_latent():
    model, variables, images = tiny_generator_output()
    assert images.shape == (3, 32, 32, 3) and model.image_size == 32
    assert np.all(np.abs(images) < 1.0) and np.std(np.asarray(images)) > 1e-3
    assert not np.allclose(images[0], images[1])  # different latents, different images
    params = flax.traverse_util.flatten_dict(meta.unbox(variables["params"]), sep="/")
    assert params["level_0/pos_embedding"].shape == (1, 1, 16, 128)
    assert params["level_2/pos_embedding"].shape == (1, 16, 16, 32)
    assert params["deaggregation_1/deaggregation_conv/kernel"].shape == (3, 3, 128, 4 * 64)
    with pytest.raises(ValueError, match=r"expected latents \[batch, 64\]"):
        model.apply(variables, jnp.zeros((1, 10)))


def test_sagan_networks_shapes_and_batch_statistics():
    generator = sagan_generator.build_sagan_generator(config_of(sagan_generator, "tiny", channels=8))
    latents = jax.random.normal(jax.random.key(0), (4, generator.latent_dim))
    variables = jax.jit(lambda: generator.init(jax.random.key(1), latents))()
    images, updates = jax.jit(lambda v, z: generator.apply(v, z, train=True, mutable=["batch_stats"]))(variables,
                                                                                                    latents)
    assert images.shape == (4, 32, 32, 3) and np.all(np.abs(images) <= 1.0)
    assert not np.allclose(updates["batch_stats"]["output_norm"]["mean"],
                           variables["batch_stats"]["output_norm"]["mean"])
    assert "attention" in variables["params"]  # after the 16x16 block
    discriminator = sagan_discriminator.build_sagan_discriminator(config_of(sagan_discriminator, "tiny", channels=8))
    d_variables = jax.jit(lambda: discriminator.init(jax.random.key(2), images))()
    assert jax.jit(lambda v, x: discriminator.apply(v, x))(d_variables, images).shape == (4,)


def test_spectral_normalisation_divides_by_the_largest_singular_value():
    discriminator = sagan_discriminator.build_sagan_discriminator(config_of(sagan_discriminator, "tiny", channels=8))
    images = jax.random.normal(jax.random.key(0), (2, 32, 32, 3))
    variables = jax.jit(lambda: discriminator.init(jax.random.key(1), images))()
    update = jax.jit(lambda v: {**v, **discriminator.apply(v, images, train=True, mutable=["batch_stats"])[1]})
    for _ in range(30):  # power iteration, one step per training forward pass
        variables = update(variables)
    kernel = np.asarray(variables["params"]["block_1"]["conv_0"]["conv"]["kernel"])
    stats = variables["batch_stats"]["block_1"]["conv_0"]["spectral_norm"]
    sigma = float(stats["conv/kernel/sigma"])
    assert sigma == pytest.approx(np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0], rel=1e-3)


def test_self_attention_matches_numpy():
    x = jax.random.normal(jax.random.key(0), (2, 4, 4, 16))
    attention = SelfAttention()
    variables = jax.jit(lambda: attention.init(jax.random.key(1), x, update_stats=False))()
    np.testing.assert_allclose(jax.jit(lambda v: attention.apply(v, x, update_stats=False))(variables), x)  # gamma 0
    update = jax.jit(lambda v: {**v, **attention.apply(v, x, update_stats=True, mutable=["batch_stats"])[1]})
    for _ in range(50):
        variables = update(variables)
    variables = {**variables, "params": {**variables["params"], "gamma": jnp.asarray(0.7)}}
    got = jax.jit(lambda v: attention.apply(v, x, update_stats=False))(variables)

    def normalised(name):  # [in, out] kernel / its largest singular value, and the bias
        layer = variables["params"][name]["conv"]
        kernel = np.asarray(layer["kernel"], np.float64).reshape(-1, layer["kernel"].shape[-1])
        return kernel / np.linalg.svd(kernel, compute_uv=False)[0], np.asarray(layer["bias"], np.float64)

    flat = np.asarray(x, np.float64).reshape(2, 16, 16)
    f, g, h = ((flat @ k + b) for k, b in map(normalised, ("query", "key", "value")))
    s = np.einsum("bic,bjc->bji", f, g)
    beta = np.exp(s - s.max(-1, keepdims=True))
    beta /= beta.sum(-1, keepdims=True)
    k_out, b_out = normalised("out")
    expected = flat + 0.7 * (np.einsum("bji,bic->bjc", beta, h) @ k_out + b_out)
    np.testing.assert_allclose(np.asarray(got).reshape(2, 16, 16), expected, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("module,builder,overrides,message", [
    (gennest, gennest.build_gennest, dict(variant="huge"), "config.gan.generator.variant='huge'"),
    (gennest, gennest.build_gennest, dict(dims=(8, 8), num_heads=(1,), depths=(1, 1)), "one of each per level"),
    (gennest, gennest.build_gennest, dict(dims=(8, 6), num_heads=(4, 4), depths=(1, 1)), "width 6 is not divisible"),
    (gennest, gennest.build_gennest, dict(block_side=0), "config.gan.generator.block_side=0"),
    (sagan_generator, sagan_generator.build_sagan_generator, dict(attention_resolution=5),
     "attention_resolution=5"),
    (sagan_generator, sagan_generator.build_sagan_generator, dict(channels=12), "multiple of 8"),
    (sagan_discriminator, sagan_discriminator.build_sagan_discriminator, dict(variant="x"),
     "config.gan.discriminator.variant='x'"),
])
def test_config_errors_name_the_field(module, builder, overrides, message):
    config = models.config(NAMES[module])
    config.update(overrides)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        builder(config)
    assert models.build(models.config(NAMES[module])).__class__.__name__ in (
        "GenNest", "SaganGenerator", "SaganDiscriminator")
