"""Multi-head self-attention, the transformer MLP and stochastic depth, shared by every backbone."""

from typing import Any, Callable, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.layers.partitioning import param_with_axes

Dtype = Any


class EinsumDense(nn.Module):
    """A Dense layer written as an einsum, whose kernel keeps its multi-axis shape (and logical names).
    Its `kernel` and `bias` can also be read by the parent (MultiHeadAttention stacks three of them).

    Attributes:
      equation: einsum of the input and the kernel, e.g. '...d,dhk->...hk'.
      kernel_shape, kernel_axes: kernel shape and its logical axis names.
      bias_axes: logical names of the bias, whose shape is the kernel's trailing `len(bias_axes)` dims.
      fan_in_axes, fan_out_axes: kernel axes that count as fan-in / fan-out for Xavier initialisation.
    """

    equation: str
    kernel_shape: Tuple[int, ...]
    kernel_axes: Tuple[Optional[str], ...]
    bias_axes: Tuple[Optional[str], ...]
    fan_in_axes: Tuple[int, ...]
    fan_out_axes: Tuple[int, ...]
    dtype: Dtype = jnp.float32

    def setup(self):
        init = nn.initializers.xavier_uniform(in_axis=self.fan_in_axes, out_axis=self.fan_out_axes)
        self.kernel = self.param("kernel", param_with_axes(init, self.kernel_axes), self.kernel_shape)
        bias_shape = self.kernel_shape[len(self.kernel_shape) - len(self.bias_axes):]
        self.bias = self.param("bias", param_with_axes(nn.initializers.zeros, self.bias_axes), bias_shape)

    def __call__(self, x):
        return (jnp.einsum(self.equation, x.astype(self.dtype), self.kernel.astype(self.dtype))
                + self.bias.astype(self.dtype))


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product self-attention.

    Parameters follow the vit_jax layout: query/key/value kernels `[width, heads, head_dim]`, output
    kernel `[heads, head_dim, width]`, so published checkpoints map one to one. With a key / value head
    per query head the three kernels are stacked at run time into one `[width, 3, heads, head_dim]`
    projection (one matrix product instead of three; the stacked axis keeps the heads' sharding), and
    the attention runs heads-major `[batch, heads, length, head_dim]`, which XLA's CPU matrix products
    take without transposing inside them (experiments/results/levers.md).

    The attention weights `[batch, heads, queries, keys]` are sown into 'intermediates' as
    'attention_weights' when the caller asks for that collection (`apply(..., mutable=['intermediates'])`).

    Attributes:
      num_heads: number of heads; the input width must be divisible by it.
      dropout_rate: dropout on the attention weights.
      num_kv_heads: key / value heads, each shared by num_heads / num_kv_heads query heads (1: multi-query
        attention, arXiv 1911.02150, as NesT's CIFAR models); 0 gives every query head its own (standard).
        The key and value kernels are then `[width, num_kv_heads, head_dim]`.
      implementation: None: cuDNN's fused kernel where `cudnn_fits` (a GPU, bfloat16 / float16, no bias,
        no attention dropout, weights not asked for), else explicit einsums and a float32 softmax (on CPU
        they are 6-13% faster than `jax.nn.dot_product_attention`'s XLA code, forward + backward:
        experiments/results/layer_micro_dot_product_attention.md);
        'xla' or 'cudnn': that implementation of `jax.nn.dot_product_attention` (its weights are never
        sown, and attention dropout is not applied).
    """

    num_heads: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    num_kv_heads: int = 0
    implementation: Optional[str] = None

    @nn.compact
    def __call__(self, x, *, train: bool, bias: Optional[jax.Array] = None):
        """x: `[batch, length, width]`; bias: optional logits bias broadcastable to
        `[batch, heads, length, length]`. Returns `[batch, length, width]`."""
        width = x.shape[-1]
        if width % self.num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {self.num_heads}")
        head_dim = width // self.num_heads
        kv_heads = self.num_kv_heads or self.num_heads
        if self.num_heads % kv_heads:
            raise ValueError(f"num_heads {self.num_heads} is not a multiple of num_kv_heads {kv_heads}")
        if self.implementation not in (None, "xla", "cudnn"):
            raise ValueError(f"attention implementation {self.implementation!r}: expected None, 'xla' or 'cudnn'")

        def projection(name, heads):
            heads_axis = "heads" if heads == self.num_heads else None  # a shared key/value head is not sharded
            return EinsumDense("...d,dhk->...hk", (width, heads, head_dim), ("embed", heads_axis, "kv"),
                               (heads_axis, "kv"), (0,), (1, 2), dtype=self.dtype, name=name)

        projections = [projection("query", self.num_heads), projection("key", kv_heads),
                       projection("value", kv_heads)]
        if kv_heads == self.num_heads:
            kernel = jnp.stack([p.kernel for p in projections], axis=1).astype(self.dtype)
            qkv = jnp.einsum("...d,dthk->...thk", x.astype(self.dtype), kernel) + jnp.stack(
                [p.bias for p in projections]).astype(self.dtype)
            query, key, value = (qkv[..., i, :, :] for i in range(3))  # each [batch, length, heads, head_dim]
        else:
            query, key, value = (p(x) for p in projections)
        if bias is not None:
            bias = bias.reshape((1,) * (4 - bias.ndim) + bias.shape).astype(self.dtype)
        implementation = self.implementation
        if implementation is None and cudnn_fits(query, bias) and not (
                self.is_mutable_collection("intermediates") or (train and self.dropout_rate > 0)):
            implementation = "cudnn"
        if implementation is None:
            out = self._explicit(query, key, value, bias, train)
        else:  # key / value heads shared by several query heads are passed as they are
            out = jax.nn.dot_product_attention(query, key, value, bias=bias, scale=1.0 / np.sqrt(head_dim),
                                               implementation=implementation)
        return EinsumDense("...hk,hkd->...d", (self.num_heads, head_dim, width), ("heads", "kv", "embed"),
                           ("embed",), (0, 1), (2,), dtype=self.dtype, name="out")(out)

    def _explicit(self, query, key, value, bias, train):
        """Softmax attention with the weights materialised (sown when asked for, dropout in training) on
        `[batch, length, heads, head_dim]` inputs; the products run heads-major. The softmax's division
        is applied to the output, `[..., query, head_dim]`, rather than to the weights, `[..., query, key]`
        (dropout's mask and scale commute with it): one pass fewer over the largest tensor, each way."""
        repeats = self.num_heads // key.shape[-2]
        heads_major = lambda t: jnp.swapaxes(t, 1, 2)  # [batch, heads, length, head_dim]
        query = heads_major(query * jnp.asarray(1.0 / np.sqrt(query.shape[-1]), self.dtype))
        key, value = (heads_major(jnp.repeat(t, repeats, axis=-2)) for t in (key, value))
        logits = jnp.einsum("bhqd,bhkd->bhqk", query, key).astype(jnp.float32)
        if bias is not None:
            logits = logits + bias
        exp = jnp.exp(logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True)))
        inverse_total = 1.0 / jnp.sum(exp, axis=-1, keepdims=True)  # [batch, heads, query, 1]
        if self.is_mutable_collection("intermediates"):
            self.sow("intermediates", "attention_weights", (exp * inverse_total).astype(self.dtype))
        exp = nn.Dropout(self.dropout_rate)(exp.astype(self.dtype), deterministic=not train)
        out = jnp.einsum("bhqk,bhkd->bhqd", exp, value) * inverse_total.astype(self.dtype)
        return heads_major(out)


def cudnn_fits(query, bias) -> bool:
    """Whether cuDNN's fused attention takes `query` `[batch, length, heads, head_dim]`: on a GPU, in
    bfloat16 or float16, head size a multiple of 8 up to 128, and no logits bias (a learned bias needs
    its gradient, which the fused kernel gives only for some shapes)."""
    return (jax.default_backend() == "gpu" and bias is None and query.dtype in (jnp.bfloat16, jnp.float16)
            and query.shape[-1] % 8 == 0 and query.shape[-1] <= 128)


GELUS = ("erf", "tanh")  # the exact GELU, or its tanh approximation (Flax's nn.gelu default)


def _input_only_backward(function, derivative):
    """`function` (elementwise) whose backward pass keeps only its input from the forward pass and
    recomputes `derivative` from it. Autodiff would keep the intermediate terms too (GELU: the erf or
    tanh term, one more `[..., hidden]` buffer per MLP alive until the backward pass). The barrier keeps
    XLA from merging the recomputed terms with the forward pass's, which would keep those alive again."""

    @jax.custom_vjp
    def wrapped(x):
        return function(x)

    def backward(x, grad):
        return (grad * derivative(jax.lax.optimization_barrier(x)),)

    wrapped.defvjp(lambda x: (function(x), x), backward)
    return wrapped


def _normal_cdf(x):
    return 0.5 + 0.5 * jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype))


def _gelu_erf_derivative(x):
    """Phi(x) + x phi(x)."""
    return _normal_cdf(x) + x * jnp.exp(-0.5 * x * x) * np.asarray(1.0 / np.sqrt(2.0 * np.pi), x.dtype)


def _tanh_term(x):
    """tanh(sqrt(2 / pi) (x + 0.044715 x^3)), as jax.nn.gelu(approximate=True) writes it."""
    return jnp.tanh(np.asarray(np.sqrt(2.0 / np.pi), x.dtype) * (x + np.asarray(0.044715, x.dtype) * x ** 3))


def _gelu_tanh_derivative(x):
    tanh = _tanh_term(x)
    inner_derivative = np.asarray(np.sqrt(2.0 / np.pi), x.dtype) * (1 + np.asarray(3 * 0.044715, x.dtype) * x * x)
    return 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * inner_derivative


_gelu_erf = _input_only_backward(lambda x: x * _normal_cdf(x), _gelu_erf_derivative)
_gelu_tanh = _input_only_backward(lambda x: x * (0.5 * (1.0 + _tanh_term(x))), _gelu_tanh_derivative)


def gelu(x, approximate: bool = False):
    """GELU: x/2 (1 + erf(x / sqrt 2)), or its tanh approximation (jax.nn.gelu(approximate=True)); the
    backward pass keeps only x (`_input_only_backward`). The exact form is written with erf, as torch
    writes it: `jax.nn.gelu` uses erfc, whose XLA code on CPU costs about three times as much."""
    return _gelu_tanh(x) if approximate else _gelu_erf(x)


class MlpBlock(nn.Module):
    """Dense -> GELU -> dropout -> Dense -> dropout, on the last axis.

    Attributes:
      hidden_dim: width of the hidden layer.
      out_dim: output width; the input width when None.
      hidden_axis: logical name of the hidden axis ("mlp" is sharded over the model axis; small
        bottlenecks such as TokenLearner's use None).
      kernel_init, bias_init: initializers of both Dense layers (ViT's by default).
    """

    hidden_dim: int
    out_dim: Optional[int] = None
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    hidden_axis: Optional[str] = "mlp"
    out_axis: Optional[str] = "embed"
    approximate_gelu: bool = False
    kernel_init: Callable = nn.initializers.xavier_uniform()
    bias_init: Callable = nn.initializers.normal(stddev=1e-6)

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[..., width]` -> `[..., out_dim or width]`."""
        out_dim = self.out_dim or x.shape[-1]
        x = nn.Dense(self.hidden_dim, dtype=self.dtype, name="Dense_0",
                     kernel_init=param_with_axes(self.kernel_init, ("embed", self.hidden_axis)),
                     bias_init=param_with_axes(self.bias_init, (self.hidden_axis,)))(x)
        x = gelu(x, approximate=self.approximate_gelu)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = nn.Dense(out_dim, dtype=self.dtype, name="Dense_1",
                     kernel_init=param_with_axes(self.kernel_init, (self.hidden_axis, self.out_axis)),
                     bias_init=param_with_axes(self.bias_init, (self.out_axis,)))(x)
        return nn.Dropout(self.dropout_rate)(x, deterministic=not train)


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch per example with probability `rate`."""

    rate: float = 0.0

    @nn.compact
    def __call__(self, x, *, train: bool):
        if not train or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0],) + (1,) * (x.ndim - 1))
        return jnp.where(mask, x / keep, jnp.zeros_like(x))


def layer_norm(name: Optional[str] = None, *, epsilon: float = 1e-6, dtype: Dtype = jnp.float32):
    """LayerNorm over the last (embed) axis with logically named scale and bias."""
    return nn.LayerNorm(
        epsilon=epsilon, dtype=dtype, name=name,
        scale_init=param_with_axes(nn.initializers.ones, ("embed",)),
        bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))
