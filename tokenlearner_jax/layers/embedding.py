"""Patch embedding and learned position embedding."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers.partitioning import param_with_axes


class PatchEmbedding(nn.Module):
    """Non-overlapping patches (or video tubelets) projected to `width` channels by a strided convolution.

    Attributes:
      width: output channels.
      patch_size: (height, width) of a patch, or (frames, height, width) of a tubelet (ViViT's tubelet
        embedding, a 3D convolution); the convolution's kernel and stride.
    """

    width: int
    patch_size: Sequence[int]
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images):
        """images: `[batch, height, width, channels]` -> `[batch, height/ph, width/pw, width]`, or with a
        tubelet size videos `[batch, frames, height, width, channels]` -> `[batch, frames/pt, height/ph,
        width/pw, width]`."""
        size = tuple(self.patch_size)
        if len(size) not in (2, 3) or images.ndim != len(size) + 2:
            raise ValueError(f"patch size {size} needs inputs of rank {len(size) + 2}, got shape {images.shape}")
        if any(n % p for n, p in zip(images.shape[1:-1], size)):
            kind = "image" if len(size) == 2 else "video"
            raise ValueError(f"{kind} size {images.shape[1:-1]} is not divisible by patch size {size}")
        axes = ("patch_t", "patch_h", "patch_w")[-len(size):] + ("conv_in", "embed")
        return nn.Conv(
            self.width, size, strides=size, padding="VALID", dtype=self.dtype, name="embedding",
            kernel_init=param_with_axes(nn.initializers.lecun_normal(), axes),
            bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(images)


class AddPositionEmbedding(nn.Module):
    """Adds a learned position embedding of shape `[1, length, width]` to `[batch, length, width]`."""

    @nn.compact
    def __call__(self, x):
        pos = self.param("pos_embedding",
                         param_with_axes(nn.initializers.normal(stddev=0.02), (None, "length", "embed")),
                         (1,) + x.shape[1:])
        return x + pos.astype(x.dtype)
