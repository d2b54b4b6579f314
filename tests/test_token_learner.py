"""TokenLearner v1.1, v1.0 and TokenFuser against an independent NumPy implementation of the math, with
either GELU: 'tanh' (Flax's nn.gelu default, which the official TokenLearner code uses) or 'erf' (exact).
Each comparison holds within float32 round-off (1e-5 absolute plus 2e-5 relative: the error of a float32
layer norm, MLP and softmax differs between CPUs, e.g. AVX2 against AVX-512), and the other GELU's
reference is at least ten times farther off, so the test tells the two apart."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

from tokenlearner_jax.layers import TokenFuser, TokenLearnerV10, TokenLearnerV11


def np_layer_norm(x, p, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * p["scale"] + p["bias"]


def np_gelu(x, kind):
    if kind == "erf":
        return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def np_mlp(x, p, kind):
    h = np_gelu(x @ p["Dense_0"]["kernel"] + p["Dense_0"]["bias"], kind)
    return h @ p["Dense_1"]["kernel"] + p["Dense_1"]["bias"]


OTHER = {"erf": "tanh", "tanh": "erf"}


def assert_matches_only(out, reference, gelu):
    """`out` equals `reference(gelu)` within float32 round-off; `reference` with the other GELU is 10x farther off."""
    own = reference(gelu)
    np.testing.assert_allclose(out, own, rtol=2e-5, atol=1e-5)
    assert np.abs(out - reference(OTHER[gelu])).max() > 10 * np.abs(out - own).max()


def np_softmax(x, axis):
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def np_conv3x3_same(x, kernel):
    """x [b, h, w, cin], kernel [3, 3, cin, cout], zero padding, stride 1, no bias: explicit loops."""
    b, h, w, _ = x.shape
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    out = np.zeros((b, h, w, kernel.shape[-1]))
    for i in range(3):
        for j in range(3):
            out += np.einsum("bhwc,cd->bhwd", padded[:, i:i + h, j:j + w], kernel[i, j])
    return out


def to_np(tree):
    return jax.tree.map(lambda x: np.asarray(x, np.float64), jax.device_get(tree))


def random_params(module, *args, seed=0):
    """Initialises, then replaces every parameter by random values (so zero-inits are exercised too)."""
    params = flax.core.meta.unbox(module.init(jax.random.key(seed), *args, train=False))["params"]
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree.unflatten(treedef, [0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)])


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
@pytest.mark.parametrize("positions", [49, 12])
def test_v11_matches_numpy(positions, gelu):
    x = np.random.RandomState(0).randn(2, positions, 16).astype(np.float32)
    module = TokenLearnerV11(num_tokens=8, bottleneck_dim=8, gelu=gelu)
    params = random_params(module, x)
    out = np.asarray(module.apply({"params": params}, x, train=False))
    p = to_np(params)

    def reference(kind):
        maps = np_mlp(np_layer_norm(x, p["LayerNorm_0"]), p["token_masking"], kind)  # [b, positions, n]
        attention = np_softmax(np.swapaxes(maps, 1, 2), axis=-1)  # softmax over space
        return attention @ x  # pools the un-normalised inputs

    assert out.shape == (2, 8, 16)
    assert_matches_only(out, reference, gelu)


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
@pytest.mark.parametrize("grid", [(4, 4), (3, 5)])
def test_v10_matches_numpy_on_square_and_non_square_grids(grid, gelu):
    x = np.random.RandomState(1).randn(2, *grid, 8).astype(np.float32)
    module = TokenLearnerV10(num_tokens=8, gelu=gelu)
    params = random_params(module, x)
    out = np.asarray(module.apply({"params": params}, x, train=False))
    p = to_np(params)

    def reference(kind):
        maps = np_layer_norm(x, p["LayerNorm_0"])
        for i in range(4):
            maps = np_conv3x3_same(maps, p[f"Conv_{i}"]["kernel"])
            if i < 3:
                maps = np_gelu(maps, kind)
        weights = 1.0 / (1.0 + np.exp(-maps.reshape(2, -1, 8)))  # element-wise sigmoid, [b, hw, n]
        return np.einsum("bpn,bpc->bnc", weights, x.reshape(2, -1, 8))  # weighted sum over space

    assert out.shape == (2, 8, 8)
    assert_matches_only(out, reference, gelu)


def test_v10_rejects_flat_inputs():
    with pytest.raises(ValueError, match="spatial grid"):
        TokenLearnerV10(num_tokens=4).init(jax.random.key(0), jnp.zeros((1, 16, 8)), train=False)


@pytest.mark.parametrize("gelu", ["tanh", "erf"])
def test_fuser_matches_numpy(gelu):
    rng = np.random.RandomState(2)
    tokens = rng.randn(2, 8, 16).astype(np.float32)
    original = rng.randn(2, 10, 16).astype(np.float32)
    module = TokenFuser(bottleneck_dim=8, gelu=gelu)
    params = random_params(module, tokens, original)
    out = np.asarray(module.apply({"params": params}, tokens, original, train=False))
    p = to_np(params)

    def reference(kind):
        t = np_layer_norm(tokens, p["fuser_mix_norm1"])
        t = np.swapaxes(np.swapaxes(t, 1, 2) @ p["token_mixing"]["kernel"] + p["token_mixing"]["bias"], 1, 2)
        t = np_layer_norm(t, p["fuser_mix_norm2"])
        gate = 1.0 / (1.0 + np.exp(-np_mlp(np_layer_norm(original, p["LayerNorm_0"]), p["token_masking"], kind)))
        return gate @ t  # [b, positions, n] @ [b, n, c]

    assert out.shape == original.shape
    assert_matches_only(out, reference, gelu)


def test_fuser_starts_at_zero_so_the_fused_block_is_the_identity():
    rng = np.random.RandomState(3)
    tokens, original = rng.randn(2, 4, 16), rng.randn(2, 10, 16)
    module = TokenFuser()
    variables = flax.core.meta.unbox(module.init(jax.random.key(0), tokens, original, train=False))
    np.testing.assert_array_equal(np.asarray(variables["params"]["token_mixing"]["kernel"]), 0.0)
    out = module.apply(variables, tokens, original, train=False)
    np.testing.assert_allclose(np.asarray(out), 0.0, atol=1e-6)


def test_token_attention_is_sown_for_pictures():
    x = np.random.RandomState(4).randn(1, 9, 8).astype(np.float32)
    module = TokenLearnerV11(num_tokens=3)
    variables = module.init(jax.random.key(0), x, train=False)
    _, state = module.apply(variables, x, train=False, mutable=["intermediates"])
    (attention,) = state["intermediates"]["token_attention"]
    assert attention.shape == (1, 3, 9)
    np.testing.assert_allclose(np.asarray(attention).sum(-1), 1.0, rtol=1e-5)
