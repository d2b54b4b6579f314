"""Dense 2D convolution whose kernel gradient is a sum of matrix products, one per kernel tap.

The forward pass and the input gradient are lax's convolutions. The kernel gradient is not: XLA's CPU
backend computes it as a convolution contracting over batch and space, which took 1.7 s against the
forward pass's 0.15 s at MaxViT-T's second stem convolution (`[16, 112, 112, 64]` -> 64, 2 AMD EPYC
cores) and put NesT-T's block aggregation first in its train-step profile. Here it is, for each tap
(p, q) of the k x k kernel,
`grad_kernel[p, q] = window_pq(x)^T @ grad_out`, a `[c_in, batch * h' * w'] @ [batch * h' * w', c_out]`
product over the strided window of the padded input that tap sees: the same sums, in another order, at
the speed of a matrix product: forward + backward 2.07x and 1.28x as fast at NesT-T's aggregations,
1.81x at that stem convolution, but 0.22x for a convolution to 8 channels such as TokenLearner v1.1's,
which keeps nn.Conv (experiments/results/layer_micro_conv_kernel_grad.md; whole train steps: lever
'conv_kernel_grad_matmuls_nest_maxvit' in experiments/results/levers.md).
`Conv` has nn.Conv's parameters ('kernel' `[k, k, c_in, c_out]`, 'bias' `[c_out]`), so checkpoints and
weight imports are unchanged.
"""

import functools
from typing import Callable, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

Padding = Tuple[Tuple[int, int], Tuple[int, int]]
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int]:
    """TensorFlow 'SAME' padding (before, after) of one spatial dimension: output side ceil(size / stride)."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def explicit_padding(padding: Union[str, Sequence[Tuple[int, int]]], spatial: Sequence[int],
                     kernel: Sequence[int], strides: Sequence[int]) -> Padding:
    """'SAME', 'VALID' or ((top, bottom), (left, right)) as ((top, bottom), (left, right))."""
    if isinstance(padding, str):
        if padding.upper() == "SAME":
            return tuple(same_padding(n, k, s) for n, k, s in zip(spatial, kernel, strides))
        if padding.upper() == "VALID":
            return ((0, 0), (0, 0))
        raise ValueError(f"padding {padding!r}: expected 'SAME', 'VALID' or ((top, bottom), (left, right))")
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def tap_window(padded: jax.Array, p: int, q: int, out_size: Tuple[int, int], strides: Tuple[int, int]) -> jax.Array:
    """The input kernel tap (p, q) multiplies, over all outputs: padded `[batch, h, w, c]` ->
    `[batch, out_h, out_w, c]` with element [b, i, j] = padded[b, i * sh + p, j * sw + q]."""
    (out_h, out_w), (sh, sw) = out_size, strides
    batch, _, _, channels = padded.shape
    return jax.lax.slice(padded, (0, p, q, 0), (batch, p + (out_h - 1) * sh + 1, q + (out_w - 1) * sw + 1, channels),
                         (1, sh, sw, 1))


def _lax_conv(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DIMENSIONS)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv2d(x: jax.Array, kernel: jax.Array, strides: Tuple[int, int], padding: Padding) -> jax.Array:
    """x: `[batch, h, w, c_in]`, kernel: `[kh, kw, c_in, c_out]` -> `[batch, h', w', c_out]`, the
    cross-correlation of lax.conv_general_dilated with explicit padding ((top, bottom), (left, right))."""
    return _lax_conv(x, kernel, strides, padding)


def _conv2d_forward(x, kernel, strides, padding):
    return _lax_conv(x, kernel, strides, padding), (x, kernel)


def _conv2d_backward(strides, padding, residuals, grad_out):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda inputs: _lax_conv(inputs, kernel, strides, padding), x)
    (grad_x,) = input_vjp(grad_out)
    padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    taps = [jnp.einsum("bhwi,bhwo->io", tap_window(padded, p, q, grad_out.shape[1:3], strides), grad_out,
                       preferred_element_type=jnp.float32)
            for p in range(kernel.shape[0]) for q in range(kernel.shape[1])]
    grad_kernel = jnp.stack(taps).reshape(kernel.shape).astype(kernel.dtype)
    return grad_x, grad_kernel


conv2d.defvjp(_conv2d_forward, _conv2d_backward)


class Conv(nn.Module):
    """nn.Conv(features, kernel_size, strides, padding) on `[batch, h, w, c_in]`, with nn.Conv's parameter
    names and shapes, computed by `conv2d` (module docstring).

    Attributes:
      features: c_out.
      kernel_size: (kh, kw).
      strides: (sh, sw).
      padding: 'SAME' (TensorFlow's), 'VALID' or ((top, bottom), (left, right)).
      use_bias: add a bias per output channel.
      kernel_init, bias_init: initialisers of 'kernel' `[kh, kw, c_in, c_out]` and 'bias' `[c_out]`.
      dtype: the computation's; parameters stay float32.
    """

    features: int
    kernel_size: Tuple[int, int] = (3, 3)
    strides: Tuple[int, int] = (1, 1)
    padding: Union[str, Sequence[Tuple[int, int]]] = "SAME"
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    bias_init: Callable = nn.initializers.zeros
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: `[batch, h, w, c_in]` -> `[batch, h', w', features]`."""
        kernel_size, strides = tuple(self.kernel_size), tuple(self.strides)
        kernel = self.param("kernel", self.kernel_init, kernel_size + (x.shape[-1], self.features))
        padding = explicit_padding(self.padding, x.shape[1:3], kernel_size, strides)
        y = conv2d(x.astype(self.dtype), kernel.astype(self.dtype), strides, padding)
        if self.use_bias:
            y = y + self.param("bias", self.bias_init, (self.features,)).astype(self.dtype)
        return y
