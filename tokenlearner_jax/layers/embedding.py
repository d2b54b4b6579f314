"""Patch embedding and learned position embedding."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers.partitioning import param_with_axes


class PatchEmbedding(nn.Module):
    """Non-overlapping patches projected to `width` channels by a strided convolution.

    Attributes:
      width: output channels.
      patch_size: (height, width) of a patch; the convolution's kernel and stride.
    """

    width: int
    patch_size: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        """images: `[batch, height, width, channels]` -> `[batch, height/ph, width/pw, width]`."""
        ph, pw = self.patch_size
        if images.shape[1] % ph or images.shape[2] % pw:
            raise ValueError(f"image size {images.shape[1:3]} is not divisible by patch size {(ph, pw)}")
        return nn.Conv(
            self.width, (ph, pw), strides=(ph, pw), padding="VALID", dtype=self.dtype, name="embedding",
            kernel_init=param_with_axes(nn.initializers.lecun_normal(), ("patch_h", "patch_w", "conv_in", "embed")),
            bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(images)


class AddPositionEmbedding(nn.Module):
    """Adds a learned position embedding of shape `[1, length, width]` to `[batch, length, width]`."""

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding",
                         param_with_axes(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
                         (1,) + x.shape[1:])
        return x + pos.astype(x.dtype)
