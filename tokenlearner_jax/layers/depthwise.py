"""Depthwise 2D convolution as a sum of shifted, per-channel-scaled copies of the input.

It computes what `nn.Conv(c, (k, k), strides, padding='SAME', feature_group_count=c)` computes, with the
same parameters ('kernel' `[k, k, 1, c]`, 'bias' `[c]`), so checkpoints and weight imports are unchanged.
Why not that conv: in a profile of MaxViT-T's train step on XLA's CPU backend (experiments/profile_ops.py)
the largest ops were fusions on `[c, 3, 3, c]` arrays, a dense form of the `[3, 3, 1, c]` depthwise kernel
(c times the work), and the grouped convolutions of both passes followed. The k * k shifted products are
elementwise work that XLA fuses into a few loops, forward and backward, on every backend: MaxViT-T's train
step at batch 16 on 2 CPU cores went from 28.4 to 13.8 s and its forward pass became 2.2x as fast
(experiments/results/levers.md, lever 'depthwise_shifted').
"""

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.layers.conv import same_padding, tap_window


def depthwise_conv2d(x: jax.Array, kernel: jax.Array, stride: int = 1) -> jax.Array:
    """x: `[batch, h, w, c]`, kernel: `[k, k, 1, c]` -> `[batch, ceil(h / stride), ceil(w / stride), c]`,
    'SAME' padding: out[b, i, j, c] = sum_{p, q} x_padded[b, i * stride + p, j * stride + q, c] * kernel[p, q, 0, c]."""
    _, height, width, channels = x.shape
    k = kernel.shape[0]
    if kernel.shape != (k, k, 1, channels):
        raise ValueError(f"depthwise_conv2d: kernel {kernel.shape} does not fit {channels} channels (expected "
                         f"({k}, {k}, 1, {channels}))")
    out_h, out_w = -(-height // stride), -(-width // stride)
    x = jnp.pad(x, ((0, 0), same_padding(height, k, stride), same_padding(width, k, stride), (0, 0)))
    out = None
    for p in range(k):
        for q in range(k):
            term = tap_window(x, p, q, (out_h, out_w), (stride, stride)) * kernel[p, q, 0]
            out = term if out is None else out + term
    return out


class DepthwiseConv(nn.Module):
    """`nn.Conv(c, (k, k), strides=stride, padding='SAME', feature_group_count=c)` for the input's c channels
    (module docstring), with its parameter names and shapes.

    Attributes:
      kernel_size: k.
      stride: of both spatial dimensions.
      use_bias: add a bias per channel.
      kernel_init, bias_init: initialisers of 'kernel' `[k, k, 1, c]` and 'bias' `[c]`.
    """

    kernel_size: int = 3
    stride: int = 1
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: `[batch, h, w, c]` -> `[batch, ceil(h / stride), ceil(w / stride), c]`."""
        channels = x.shape[-1]
        kernel = self.param("kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, channels))
        y = depthwise_conv2d(x.astype(self.dtype), kernel.astype(self.dtype), self.stride)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (channels,)).astype(self.dtype)
        return y
