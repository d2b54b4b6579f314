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

    @nn.compact
    def __call__(self, x):
        init = nn.initializers.xavier_uniform(in_axis=self.fan_in_axes, out_axis=self.fan_out_axes)
        kernel = self.param("kernel", param_with_axes(init, self.kernel_axes), self.kernel_shape)
        bias_shape = self.kernel_shape[len(self.kernel_shape) - len(self.bias_axes):]
        bias = self.param("bias", param_with_axes(nn.initializers.zeros, self.bias_axes), bias_shape)
        return jnp.einsum(self.equation, x.astype(self.dtype), kernel.astype(self.dtype)) + bias.astype(self.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head dot-product self-attention.

    Parameters follow the vit_jax layout: query/key/value kernels `[width, heads, head_dim]`, output
    kernel `[heads, head_dim, width]`, so published checkpoints map one to one.

    Attributes:
      num_heads: number of heads; the input width must be divisible by it.
      dropout_rate: dropout on the attention weights.
      num_kv_heads: key / value heads, each shared by num_heads / num_kv_heads query heads (1: multi-query
        attention, arXiv 1911.02150, as NesT's CIFAR models); 0 gives every query head its own (standard).
        The key and value kernels are then `[width, num_kv_heads, head_dim]`.
    """

    num_heads: int
    dropout_rate: float = 0.0
    dtype: Dtype = jnp.float32
    num_kv_heads: int = 0

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

        def projection(name, heads):
            heads_axis = "heads" if heads == self.num_heads else None  # a shared key/value head is not sharded
            return EinsumDense("...d,dhk->...hk", (width, heads, head_dim), ("embed", heads_axis, "kv"),
                               (heads_axis, "kv"), (0,), (1, 2), dtype=self.dtype, name=name)(x)

        query = projection("query", self.num_heads)
        key, value = (jnp.repeat(projection(name, kv_heads), self.num_heads // kv_heads, axis=-2)
                      for name in ("key", "value"))
        logits = jnp.einsum("bqhd,bkhd->bhqk", query, key) / jnp.sqrt(head_dim).astype(self.dtype)
        if bias is not None:
            logits = logits + bias.astype(logits.dtype)
        weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(self.dtype)
        self.sow("intermediates", "attention_weights", weights)
        weights = nn.Dropout(self.dropout_rate)(weights, deterministic=not train)
        out = jnp.einsum("bhqk,bkhd->bqhd", weights, value)
        return EinsumDense("...hk,hkd->...d", (self.num_heads, head_dim, width), ("heads", "kv", "embed"),
                           ("embed",), (0, 1), (2,), dtype=self.dtype, name="out")(out)


def gelu(x, approximate: bool = False):
    """GELU: x/2 (1 + erf(x / sqrt 2)), or its tanh approximation. The exact form is written with erf, as
    torch writes it: `jax.nn.gelu` uses erfc, whose XLA code on CPU costs about three times as much."""
    if approximate:
        return jax.nn.gelu(x, approximate=True)
    return x * (0.5 + 0.5 * jax.lax.erf(x * np.asarray(np.sqrt(0.5), x.dtype)))


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
