"""Token mixers (layers/mixers.py): the pooling mixer's borders against an explicit loop, every mixer's
shapes and parameters, and how each one treats its grid."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax.layers import mixers
from tokenlearner_jax.layers.attention import MultiHeadAttention


def apply(module, x):
    variables = flax.core.meta.unbox(module.init(jax.random.key(0), x, train=False))
    return variables, np.asarray(module.apply(variables, x, train=False))


def pooling_loop(x: np.ndarray, pool_size: int) -> np.ndarray:
    """avg_pool - x with the average over the in-image part of each window only (padding not counted)."""
    _, height, width, _ = x.shape
    half = pool_size // 2
    out = np.empty_like(x)
    for i in range(height):
        for j in range(width):
            window = x[:, max(0, i - half):i + half + 1, max(0, j - half):j + half + 1]
            out[:, i, j] = window.mean(axis=(1, 2)) - x[:, i, j]
    return out


@pytest.mark.parametrize("pool_size", [3, 5])
@pytest.mark.parametrize("grid", [(5, 7), (1, 6), (2, 2)])
def test_pooling_counts_only_pixels_inside_the_image(pool_size, grid):
    x = np.random.RandomState(0).randn(2, *grid, 4).astype(np.float32)
    _, out = apply(mixers.PoolingMixer(pool_size), jnp.asarray(x))
    np.testing.assert_allclose(out, pooling_loop(x, pool_size), atol=1e-6)


def test_pooling_of_a_constant_grid_is_zero_everywhere_including_corners():
    # With the padding counted, the corners of a 3x3 pool would average 4 ones and 5 zeros: 4/9 - 1.
    _, out = apply(mixers.PoolingMixer(3), jnp.ones((1, 4, 4, 2)))
    np.testing.assert_allclose(out, 0.0, atol=1e-7)


def test_pooling_rejects_an_even_window():
    with pytest.raises(ValueError, match="odd"):
        apply(mixers.PoolingMixer(4), jnp.ones((1, 4, 4, 2)))


@pytest.mark.parametrize("name, expected_params", [
    ("pooling", {}),
    ("identity", {}),
    ("attention", {"attention/query/kernel": (64, 2, 32), "attention/query/bias": (2, 32),
                   "attention/key/kernel": (64, 2, 32), "attention/key/bias": (2, 32),
                   "attention/value/kernel": (64, 2, 32), "attention/value/bias": (2, 32),
                   "attention/out/kernel": (2, 32, 64), "attention/out/bias": (64,)}),
    ("depthwise_conv", {"conv/kernel": (3, 3, 1, 64), "conv/bias": (64,)}),
    ("spatial_mlp", {"kernel": (35, 35), "bias": (35,)}),
])
def test_every_mixer_keeps_the_grid_and_has_its_own_parameters(name, expected_params):
    x = jnp.asarray(np.random.RandomState(1).randn(2, 5, 7, 64), jnp.float32)
    variables, out = apply(mixers.make_mixer(name), x)
    assert out.shape == x.shape and np.all(np.isfinite(out))
    flat = flax.traverse_util.flatten_dict(variables.get("params", {}), sep="/")
    assert {k: v.shape for k, v in flat.items()} == expected_params
    if name == "identity":
        np.testing.assert_array_equal(out, np.asarray(x))
    else:
        assert not np.allclose(out, np.asarray(x))


def test_attention_mixer_is_the_shared_attention_over_flattened_positions():
    x = jnp.asarray(np.random.RandomState(2).randn(2, 3, 4, 64), jnp.float32)
    variables, out = apply(mixers.AttentionMixer(head_dim=16), x)
    reference = MultiHeadAttention(num_heads=4).apply({"params": variables["params"]["attention"]},
                                                       x.reshape(2, 12, 64), train=False)
    np.testing.assert_allclose(out, np.asarray(reference).reshape(x.shape), atol=1e-6)


def test_attention_mixer_needs_whole_heads():
    with pytest.raises(ValueError, match="head_dim"):
        apply(mixers.AttentionMixer(head_dim=32), jnp.ones((1, 2, 2, 48)))


def test_spatial_mlp_mixes_positions_with_one_matrix_shared_by_channels():
    x = jnp.asarray(np.random.RandomState(3).randn(2, 2, 3, 5), jnp.float32)
    variables, out = apply(mixers.SpatialMlpMixer(), x)
    kernel, bias = (np.asarray(variables["params"][k]) for k in ("kernel", "bias"))
    tokens = np.asarray(x).reshape(2, 6, 5)
    expected = np.einsum("bqc,qp->bpc", tokens, kernel) + bias[:, None]
    np.testing.assert_allclose(out, expected.reshape(x.shape), atol=1e-6)


def test_depthwise_conv_does_not_mix_channels():
    x = np.zeros((1, 5, 5, 3), np.float32)
    x[0, 2, 2, 1] = 1.0  # an impulse in channel 1 only
    variables, out = apply(mixers.DepthwiseConvMixer(3), jnp.asarray(x))
    bias = np.asarray(variables["params"]["conv"]["bias"])
    changed = np.abs(out - bias).sum(axis=(0, 1, 2))
    assert changed[1] > 0 and changed[0] == 0 and changed[2] == 0


def test_unknown_mixer_is_rejected_with_the_choices():
    with pytest.raises(ValueError, match="spatial_mlp"):
        mixers.make_mixer("convolution")
