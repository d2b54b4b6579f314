"""MultiHeadAttention, MlpBlock and gelu against NumPy references written from the formulas."""

import math

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tokenlearner_jax.layers.attention import MlpBlock, MultiHeadAttention, cudnn_fits, gelu

BATCH, LENGTH, WIDTH, HEADS = 2, 5, 16, 4


def numpy_attention(params, x, num_heads, bias=None):
    """Softmax attention from the parameters, in float64: heads of a shared key / value head repeat it."""
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    x = np.asarray(x, np.float64)
    q = np.einsum("bld,dhk->blhk", x, p["query"]["kernel"]) + p["query"]["bias"]
    k, v = (np.einsum("bld,dhk->blhk", x, p[n]["kernel"]) + p[n]["bias"] for n in ("key", "value"))
    k, v = (np.repeat(t, num_heads // t.shape[2], axis=2) for t in (k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    out = np.einsum("bhqk,bkhd->bqhd", weights, v)
    return np.einsum("bqhd,hdw->bqw", out, p["out"]["kernel"]) + p["out"]["bias"], weights


def make(num_kv_heads=0, implementation=None, dropout_rate=0.0, dtype=jnp.float32):
    module = MultiHeadAttention(HEADS, dropout_rate=dropout_rate, num_kv_heads=num_kv_heads,
                                implementation=implementation, dtype=dtype)
    x = jnp.asarray(np.random.RandomState(0).randn(BATCH, LENGTH, WIDTH), jnp.float32)
    params = flax.core.meta.unbox(module.init(jax.random.key(1), x, train=False))["params"]
    # Non-zero biases, so that a bias added to the wrong projection would show.
    params = jax.tree.map(lambda a: a + 0.1 * jnp.asarray(np.random.RandomState(a.size).randn(*a.shape), a.dtype),
                          params)
    return module, params, x


BIASES = {"none": None,
          "per_head": np.random.RandomState(2).randn(HEADS, LENGTH, LENGTH),
          "per_example": np.random.RandomState(3).randn(BATCH, HEADS, LENGTH, LENGTH)}


@pytest.mark.parametrize("implementation, num_kv_heads, bias", [
    (None, 0, "none"), (None, 1, "per_head"), (None, 2, "per_example"),
    ("xla", 0, "per_example"), ("xla", 1, "none"), ("xla", 2, "per_head")])
def test_matches_numpy(implementation, num_kv_heads, bias):
    module, params, x = make(num_kv_heads, implementation)
    bias = BIASES[bias]
    out = module.apply({"params": params}, x, train=False, bias=None if bias is None else jnp.asarray(bias, jnp.float32))
    expected, _ = numpy_attention(params, x, HEADS, bias)
    np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-5)


def test_parameter_layout():
    """The vit_jax layout the weight converters read: [width, heads, head_dim] projections, a shared
    key / value head with num_kv_heads=1, [heads, head_dim, width] output."""
    _, params, _ = make()
    head_dim = WIDTH // HEADS
    shapes = jax.tree.map(np.shape, params)
    assert shapes == {name: {"kernel": (WIDTH, HEADS, head_dim), "bias": (HEADS, head_dim)}
                      for name in ("query", "key", "value")} | {"out": {"kernel": (HEADS, head_dim, WIDTH),
                                                                       "bias": (WIDTH,)}}
    _, params, _ = make(num_kv_heads=1)
    assert params["key"]["kernel"].shape == params["value"]["kernel"].shape == (WIDTH, 1, head_dim)


def test_attention_weights_only_when_asked():
    module, params, x = make(num_kv_heads=2)
    plain = module.apply({"params": params}, x, train=False)
    out, state = module.apply({"params": params}, x, train=False, mutable=["intermediates"])
    (weights,) = state["intermediates"]["attention_weights"]
    _, expected = numpy_attention(params, x, HEADS)
    assert weights.shape == (BATCH, HEADS, LENGTH, LENGTH)
    np.testing.assert_allclose(np.asarray(weights), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(out), np.asarray(plain), rtol=1e-6, atol=1e-6)


def test_dot_product_attention_gradients_match_the_explicit_path():
    """jax.nn.dot_product_attention (implementation='xla') and the einsum path give the same gradients
    for the parameters, the input and a learned bias, with a shared key / value head."""
    module, params, x = make(num_kv_heads=2)
    fused = MultiHeadAttention(HEADS, num_kv_heads=2, implementation="xla")
    bias = jnp.asarray(BIASES["per_head"], jnp.float32)

    def loss(m):
        return lambda p, x, b: jnp.sum(jnp.sin(m.apply({"params": p}, x, train=True, bias=b)))

    grads = jax.grad(loss(module), argnums=(0, 1, 2))(params, x, bias)
    fused_grads = jax.grad(loss(fused), argnums=(0, 1, 2))(params, x, bias)
    for a, b in zip(jax.tree.leaves(fused_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)


def test_attention_dropout_only_in_training():
    module, params, x = make(dropout_rate=0.5)
    expected, _ = numpy_attention(params, x, HEADS)
    np.testing.assert_allclose(np.asarray(module.apply({"params": params}, x, train=False)), expected,
                               rtol=1e-5, atol=1e-5)
    dropped = module.apply({"params": params}, x, train=True, rngs={"dropout": jax.random.key(0)})
    assert not np.allclose(np.asarray(dropped), expected, atol=1e-3)


def test_bfloat16_compute_is_close_to_float32():
    module, params, x = make(dtype=jnp.bfloat16)
    out = module.apply({"params": params}, x, train=False)
    assert out.dtype == jnp.bfloat16
    expected, _ = numpy_attention(params, x, HEADS)
    np.testing.assert_allclose(np.asarray(out, np.float32), expected, rtol=0.05, atol=0.05)


def test_cudnn_only_on_gpu_for_half_precision():
    query = jnp.zeros((1, 4, 2, 64), jnp.bfloat16)
    assert cudnn_fits(query, None) == (jax.default_backend() == "gpu")
    assert not cudnn_fits(query.astype(jnp.float32), None)
    assert not cudnn_fits(query, jnp.zeros((1, 2, 4, 4)))
    assert not cudnn_fits(jnp.zeros((1, 4, 2, 36), jnp.bfloat16), None)


def test_gelu_matches_the_erf_formula():
    x = np.linspace(-12, 12, 40001)
    exact = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(np.asarray(gelu(jnp.asarray(x, jnp.float32)), np.float64), exact, rtol=0, atol=2e-6)
    # d/dx x Phi(x) = Phi(x) + x phi(x)
    slope = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) + v * math.exp(-v * v / 2) / math.sqrt(2 * math.pi)
                      for v in x])
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(gelu))(jnp.asarray(x, jnp.float32))), slope,
                               rtol=0, atol=2e-6)
    tanh = jnp.asarray(x, jnp.float32)
    np.testing.assert_array_equal(np.asarray(gelu(tanh, approximate=True)),
                                  np.asarray(jax.nn.gelu(tanh, approximate=True)))
    # d/dx x/2 (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3)
    u = np.sqrt(2 / np.pi) * (x + 0.044715 * x ** 3)
    tanh_slope = 0.5 * (1 + np.tanh(u)) + 0.5 * x * (1 - np.tanh(u) ** 2) * np.sqrt(2 / np.pi) * (1 + 3 * 0.044715 * x * x)
    # 1 - tanh(u)^2 cancels in float32 for |u| > 8 (as autodiff's does): 4e-6 there
    np.testing.assert_allclose(np.asarray(jax.vmap(jax.grad(lambda v: gelu(v, approximate=True)))(tanh)),
                               tanh_slope, rtol=0, atol=4e-6)


@pytest.mark.parametrize("approximate", [False, True])
def test_gelu_backward_keeps_only_its_input(approximate):
    """XLA's temporary memory for the gradient of six residual MLPs: autodiff of the same formula keeps
    the erf / tanh term of every layer until the backward pass, our gelu one buffer less per layer."""
    layers, tokens, hidden = 6, 512, 256
    autodiff = ((lambda v: jax.nn.gelu(v, approximate=True)) if approximate
                else (lambda v: v * (0.5 + 0.5 * jax.lax.erf(v * np.float32(np.sqrt(0.5))))))

    def temp_bytes(activation):
        def loss(kernels, x):
            for kernel in kernels:
                x = x + activation(x @ kernel) @ kernel.T
            return jnp.sum(x * x)

        kernels = [jnp.ones((64, hidden))] * layers
        return jax.jit(jax.grad(loss)).lower(kernels, jnp.ones((tokens, 64))).compile().memory_analysis(
            ).temp_size_in_bytes

    ours = temp_bytes(lambda v: gelu(v, approximate=approximate))
    assert temp_bytes(autodiff) - ours >= (layers - 1) * tokens * hidden * 4


def test_mlp_block_matches_numpy():
    x = jnp.asarray(np.random.RandomState(4).randn(3, WIDTH), jnp.float32)
    block = MlpBlock(hidden_dim=32, out_dim=8)
    params = flax.core.meta.unbox(block.init(jax.random.key(0), x, train=False))["params"]
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    hidden = np.asarray(x, np.float64) @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"]
    hidden = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))(hidden)
    expected = hidden @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]
    np.testing.assert_allclose(np.asarray(block.apply({"params": params}, x, train=False)), expected,
                               rtol=1e-5, atol=1e-5)
