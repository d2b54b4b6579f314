"""Token mixers of MetaFormer backbones (arXiv 2111.11418), selectable by name per stage.

Every mixer maps a grid `[batch, height, width, channels]` to the same shape and mixes information
across positions only (channels are mixed by the block's MLP):
- 'pooling': average over a k x k window (stride 1, padding not counted in the average) minus the
  input; parameter-free (PoolFormer).
- 'identity': no mixing; the block reduces to norm -> layer scale -> residual (the paper's ablation).
- 'attention': multi-head self-attention over all height * width positions, with the shared
  `MultiHeadAttention` (heads = channels / head_dim).
- 'depthwise_conv': a k x k depthwise convolution ('SAME' padding, zeros counted).
- 'spatial_mlp': a learned `[positions, positions]` token-mixing matrix plus a bias per position,
  as in ResMLP / MLP-Mixer; its size is fixed by the grid it is initialised on.

Learned tokens (layers/stage_tokens.py) arrive as a 1 x N grid ordered by token slot: attention and
the spatial MLP treat them as a set / sequence of N; pooling and the depthwise convolution mix each
token with its neighbouring slots (a 1 x k window along the slot axis, the same borders as above).
"""

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers.attention import MultiHeadAttention
from tokenlearner_jax.layers.depthwise import DepthwiseConv
from tokenlearner_jax.layers.partitioning import param_with_axes

MIXERS = ("pooling", "identity", "attention", "depthwise_conv", "spatial_mlp")


class PoolingMixer(nn.Module):
    """avg_pool(x) - x, with a `pool_size` x `pool_size` window, stride 1, padding not counted."""

    pool_size: int = 3

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height, width, channels]`."""
        del train
        if self.pool_size % 2 == 0:
            raise ValueError(f"pool_size={self.pool_size}: expected an odd size (the output keeps the grid)")
        pad = self.pool_size // 2
        pooled = nn.avg_pool(x, (self.pool_size, self.pool_size), strides=(1, 1),
                             padding=((pad, pad), (pad, pad)), count_include_pad=False)
        return pooled - x


class IdentityMixer(nn.Module):
    """Returns its input."""

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> the same array."""
        del train
        return x


class AttentionMixer(nn.Module):
    """Multi-head self-attention over all positions of the grid.

    Attributes:
      head_dim: channels per head; the channel count must be a multiple of it.
    """

    head_dim: int = 32
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height, width, channels]`."""
        batch, height, width, channels = x.shape
        if channels % self.head_dim:
            raise ValueError(f"attention mixer: {channels} channels is not a multiple of "
                             f"head_dim {self.head_dim}")
        tokens = x.reshape(batch, height * width, channels)
        attention = MultiHeadAttention(channels // self.head_dim, dtype=self.dtype, name="attention")
        return attention(tokens, train=train).reshape(x.shape)


class DepthwiseConvMixer(nn.Module):
    """A `kernel_size` x `kernel_size` depthwise convolution with bias ('SAME' padding)."""

    kernel_size: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height, width, channels]`."""
        del train
        return DepthwiseConv(self.kernel_size, dtype=self.dtype, name="conv",
                             kernel_init=param_with_axes(nn.initializers.truncated_normal(0.02),
                                                         (None, None, None, "embed")),
                             bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(x)


class SpatialMlpMixer(nn.Module):
    """out[p] = sum_q x[q] * kernel[q, p] + bias[p] over positions p, q, shared by all channels."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height, width, channels]`; the parameters
        are `kernel [positions, positions]` and `bias [positions]` with positions = height * width."""
        del train
        batch, height, width, channels = x.shape
        positions = height * width
        kernel_init = param_with_axes(nn.initializers.truncated_normal(0.02), (None, "length"))
        kernel = self.param("kernel", kernel_init, (positions, positions))
        bias = self.param("bias", param_with_axes(nn.initializers.zeros, ("length",)), (positions,))
        tokens = x.reshape(batch, positions, channels).astype(self.dtype)
        out = jnp.einsum("bqc,qp->bpc", tokens, kernel.astype(self.dtype)) + bias.astype(self.dtype)[:, None]
        return out.reshape(x.shape)


def make_mixer(mixer: str, *, pool_size: int = 3, head_dim: int = 32, kernel_size: int = 3,
               dtype=jnp.float32, name=None) -> nn.Module:
    """The token mixer called `mixer` (one of MIXERS); the other arguments configure the one that uses them."""
    if mixer == "pooling":
        return PoolingMixer(pool_size, name=name)
    if mixer == "identity":
        return IdentityMixer(name=name)
    if mixer == "attention":
        return AttentionMixer(head_dim, dtype=dtype, name=name)
    if mixer == "depthwise_conv":
        return DepthwiseConvMixer(kernel_size, dtype=dtype, name=name)
    if mixer == "spatial_mlp":
        return SpatialMlpMixer(dtype=dtype, name=name)
    raise ValueError(f"token mixer {mixer!r}: expected one of {MIXERS}")
