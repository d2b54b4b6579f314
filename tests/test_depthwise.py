"""The depthwise convolution of layers/depthwise.py against XLA's grouped convolution (lax, an independent
implementation) and flax's nn.Conv: outputs, gradients of input and kernel, parameter names and shapes."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax.layers import depthwise


def grouped_conv(x, kernel, stride):
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                        feature_group_count=x.shape[-1], precision=jax.lax.Precision.HIGHEST)


@pytest.mark.parametrize("shape,kernel_size,stride", [
    ((2, 8, 8, 5), 3, 1), ((2, 8, 8, 5), 3, 2), ((1, 7, 9, 4), 3, 2), ((2, 6, 5, 3), 7, 1), ((1, 1, 8, 6), 3, 2),
    ((1, 10, 10, 2), 5, 3)])
def test_output_and_gradients_equal_a_grouped_convolution(shape, kernel_size, stride):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 1, shape[-1])), jnp.float32)
    expected = grouped_conv(x, kernel, stride)
    got = depthwise.depthwise_conv2d(x, kernel, stride)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    want = jax.vjp(lambda a, b: grouped_conv(a, b, stride), x, kernel)[1](cotangent)
    have = jax.vjp(lambda a, b: depthwise.depthwise_conv2d(a, b, stride), x, kernel)[1](cotangent)
    for w, h in zip(want, have):
        np.testing.assert_allclose(h, w, rtol=1e-5, atol=1e-4)


def test_the_module_has_nn_convs_parameters_and_output():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 9, 9, 6)), jnp.float32)
    conv = nn.Conv(6, (3, 3), strides=(2, 2), padding="SAME", feature_group_count=6,
                   bias_init=nn.initializers.normal(1.0))
    variables = conv.init(jax.random.key(0), x)
    ours = depthwise.DepthwiseConv(3, 2)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(jnp.shape, variables)
    np.testing.assert_allclose(ours.apply(variables, x), conv.apply(variables, x), rtol=1e-5, atol=1e-5)
    no_bias = depthwise.DepthwiseConv(3, use_bias=False).init(jax.random.key(0), x)
    assert set(no_bias["params"]) == {"kernel"}


def test_a_kernel_that_does_not_fit_the_channels_is_refused():
    with pytest.raises(ValueError, match=r"kernel \(3, 3, 1, 4\) does not fit 5 channels"):
        depthwise.depthwise_conv2d(jnp.zeros((1, 4, 4, 5)), jnp.zeros((3, 3, 1, 4)))
