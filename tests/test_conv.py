"""layers/conv.py: the same values and gradients as flax's nn.Conv, whose kernel gradient is XLA's own."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax.layers.conv import Conv, explicit_padding


@pytest.mark.parametrize("shape,kernel,stride,padding", [
    ((2, 9, 7, 5), 3, 1, ((1, 1), (1, 1))),   # NesT's aggregation
    ((2, 9, 8, 4), 3, 2, "SAME"),             # MaxViT's stem: odd and even sides, TF's uneven padding
    ((2, 17, 15, 3), 7, 4, ((2, 2), (2, 2))),  # PoolFormer's stem
    ((1, 6, 6, 4), 2, 2, "VALID"),
    ((2, 5, 6, 3), 3, 1, ((0, 2), (1, 0))),
])
def test_values_and_gradients_equal_nn_conv(shape, kernel, stride, padding):
    ours = Conv(6, (kernel, kernel), (stride, stride), padding)
    reference = nn.Conv(6, (kernel, kernel), (stride, stride), padding)
    x = jax.random.normal(jax.random.PRNGKey(0), shape)
    params = ours.init(jax.random.PRNGKey(1), x)
    ref_params = reference.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(jnp.shape, ref_params)
    params = jax.tree_util.tree_map(lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(2), p.shape), params)

    y, ref_y = ours.apply(params, x), reference.apply(params, x)
    np.testing.assert_allclose(y, ref_y, rtol=1e-5, atol=1e-5)

    weights = jax.random.normal(jax.random.PRNGKey(3), y.shape)  # a loss that weights every output differently
    grads = jax.grad(lambda p, x: jnp.sum(ours.apply(p, x) * weights), argnums=(0, 1))(params, x)
    ref_grads = jax.grad(lambda p, x: jnp.sum(reference.apply(p, x) * weights), argnums=(0, 1))(params, x)
    for got, want in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bfloat16_compute_keeps_float32_kernel_gradient():
    layer = Conv(4, (3, 3), dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 6, 3))
    params = layer.init(jax.random.PRNGKey(1), x)
    grads = jax.grad(lambda p: jnp.sum(layer.apply(p, x).astype(jnp.float32) ** 2))(params)
    assert grads["params"]["kernel"].dtype == jnp.float32
    reference = jax.grad(lambda p: jnp.sum(nn.Conv(4, (3, 3)).apply(p, x) ** 2))(params)
    np.testing.assert_allclose(grads["params"]["kernel"], reference["params"]["kernel"], rtol=0.05, atol=0.05)


def test_same_padding_is_tensorflows():
    assert explicit_padding("SAME", (224, 223), (3, 3), (2, 2)) == ((0, 1), (1, 1))
    assert explicit_padding("same", (7, 7), (3, 3), (1, 1)) == ((1, 1), (1, 1))
    with pytest.raises(ValueError, match="padding 'FULL'"):
        explicit_padding("FULL", (7, 7), (3, 3), (1, 1))
