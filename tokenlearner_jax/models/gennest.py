"""GenNesT: NesT turned into an unconditional image generator (arXiv 2105.12723, its generation section).

The paper's description: the input is an embedding vector, the output a full RGB image, and NesT's block
aggregation is replaced by a block de-aggregation built on pixel shuffling. As built here:

- Latent `[batch, latent_dim]` -> Dense -> the top level's grid `[batch, S, S, dims[0]]`: one block of
  side S (the single top block of NesT on a square image).
- Level i of L: a learned position embedding `[1, blocks, S*S, width]` and pre-norm transformer blocks in
  which every S x S block attends only within itself: NesT's own level (models/nest.NestLevel, without
  its aggregation), so level i holds 4^i blocks.
- Before every level but the first, block de-aggregation (`BlockDeaggregation`): un-block -> conv 3x3
  (stride 1, SAME, bias) to 4 x the next width -> depth-to-space by 2 (pixel shuffle: doubles the height
  and the width) -> LayerNorm (eps 1e-6) -> re-block. It mirrors NesT's aggregation (conv 3x3 ->
  LayerNorm -> max pool 3x3 / 2), the max pool's halving replaced by the shuffle's doubling.
- Output: LayerNorm -> Dense to patch_size^2 * 3 -> depth-to-space by patch_size -> tanh, an image in
  (-1, 1) (config.dataset.normalize='minus_one_one') of side S * 2^(L-1) * patch_size.

What is ours: the order conv -> shuffle -> LayerNorm of the de-aggregation, the output projection by pixel
shuffle of `patch_size`, and every size of the variants. (The paper's full text was not available when this
was written; the description above is its summary, as in the NesT blog post.) The variants '*64' make
64x64 images (ImageNet 64x64, CelebA 64x64); their widths are chosen so that 'imagenet64' has about the
parameter count of the SAGAN-style generator of models/sagan_generator.py at its '64' variant (the
comparison the paper makes); 'celeba64' is a smaller one. 'tiny' makes 32x32 images and 'digits' 16x16
ones (configs/gan_digits.py) for CPU runs, each about the size of the SAGAN-style variant of the same name.
"""

from typing import Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.layers.attention import layer_norm
from tokenlearner_jax.layers.conv import Conv
from tokenlearner_jax.layers.partitioning import param_with_axes
from tokenlearner_jax.models.nest import NestLevel
from tokenlearner_jax.models.registry import DTYPES, register

# name -> (latent_dim, dims, heads, depths, block side S, patch size); image side = S * 2^(L-1) * patch.
VARIANTS = {
    "digits": (64, (64, 32, 32), (4, 2, 2), (1, 1, 1), 4, 1),
    "tiny": (64, (128, 64, 32), (4, 2, 1), (2, 1, 1), 4, 2),
    "celeba64": (128, (256, 128, 64), (4, 2, 1), (2, 2, 2), 8, 2),
    "imagenet64": (128, (512, 256, 128), (8, 4, 2), (2, 2, 2), 8, 2),
}
_INIT = nn.initializers.truncated_normal(0.02)  # NesT's init of convs and projections


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
    """Pixel shuffle: `[batch, h, w, factor^2 * c]` -> `[batch, h * factor, w * factor, c]`, with
    out[b, h * factor + i, w * factor + j, k] = x[b, h, w, (i * factor + j) * c + k] (TensorFlow's
    depth_to_space order)."""
    batch, height, width, channels = x.shape
    if channels % (factor * factor):
        raise ValueError(f"depth_to_space: {channels} channels are not a multiple of {factor}^2")
    c = channels // (factor * factor)
    x = x.reshape(batch, height, width, factor, factor, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(batch, height * factor, width * factor, c)


class BlockDeaggregation(nn.Module):
    """Doubles a grid's resolution: conv 3x3 -> depth-to-space 2 -> LayerNorm.

    Attributes:
      width: channels of the output grid.
    """

    width: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: `[batch, h, w, channels]` -> `[batch, 2h, 2w, self.width]`."""
        x = Conv(4 * self.width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="deaggregation_conv",
                 kernel_init=param_with_axes(_INIT, ("patch_h", "patch_w", "conv_in", "embed")),
                 bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(x)
        return layer_norm("deaggregation_norm", dtype=self.dtype)(depth_to_space(x, 2))


class GenNest(nn.Module):
    """GenNesT generator (module docstring).

    Attributes:
      latent_dim: size of the input vector.
      dims, num_heads, depths: per level, from the top (one block) to the bottom (4^(L-1) blocks).
      block_side: side S of the blocks.
      patch_size: side of the pixel patch each position of the last grid becomes.
    """

    latent_dim: int
    dims: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    depths: Tuple[int, ...]
    block_side: int
    patch_size: int
    mlp_ratio: int = 4
    dtype: jnp.dtype = jnp.float32

    @property
    def image_size(self) -> int:
        return self.block_side * 2 ** (len(self.dims) - 1) * self.patch_size

    @nn.compact
    def __call__(self, latents, *, train: bool = False):
        """latents: float32 `[batch, latent_dim]` -> images `[batch, image_size, image_size, 3]` in (-1, 1)."""
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"GenNest: expected latents [batch, {self.latent_dim}], got shape {latents.shape}")
        side = self.block_side
        x = nn.Dense(side * side * self.dims[0], dtype=self.dtype, name="latent_projection",
                     kernel_init=param_with_axes(_INIT, (None, "embed")),
                     bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(latents.astype(self.dtype))
        x = x.reshape(latents.shape[0], side, side, self.dims[0])
        for i, (width, heads, depth) in enumerate(zip(self.dims, self.num_heads, self.depths)):
            if i:
                x = BlockDeaggregation(width, dtype=self.dtype, name=f"deaggregation_{i}")(x)
            x = NestLevel(width, heads, self.mlp_ratio * width, (0.0,) * depth, side, aggregate=False,
                          dtype=self.dtype, name=f"level_{i}")(x, train=train)
        x = layer_norm("output_norm", dtype=self.dtype)(x)
        p = self.patch_size
        x = nn.Dense(p * p * 3, dtype=self.dtype, name="output_projection",
                     kernel_init=param_with_axes(_INIT, ("embed", None)),
                     bias_init=param_with_axes(nn.initializers.zeros, (None,)))(x)
        return jnp.tanh(depth_to_space(x, p).astype(jnp.float32))


def default_config() -> dict:
    """Every field of GenNesT's model section (`config.gan.generator`, tasks/gan.py). `variant` ('digits',
    'tiny', 'celeba64', 'imagenet64') sets latent_dim, dims, num_heads, depths, block_side and patch_size;
    non-empty tuples and positive values override it."""
    return dict(variant="tiny", latent_dim=-1, dims=(), num_heads=(), depths=(), block_side=-1, patch_size=-1,
                mlp_ratio=4, dtype="float32")


@register("gennest", default_config)
def build_gennest(config) -> GenNest:
    """Builds GenNesT from its config (`default_config`); ValueError naming the field for a bad value."""
    if config.variant not in VARIANTS:
        raise ValueError(f"config.gan.generator.variant={config.variant!r}: expected one of {sorted(VARIANTS)}")
    latent, dims, heads, depths, side, patch = VARIANTS[config.variant]
    dims = tuple(config.dims) or dims
    heads = tuple(config.num_heads) or heads
    depths = tuple(config.depths) or depths
    if not len(dims) == len(heads) == len(depths) or min(dims + heads + depths) < 1:
        raise ValueError(f"config.gan.generator.dims={dims}, num_heads={heads}, depths={depths}: expected "
                         f"positive values, one of each per level")
    for width, h in zip(dims, heads):
        if width % h:
            raise ValueError(f"config.gan.generator.dims={dims}: width {width} is not divisible by its {h} heads")
    for field, value in (("latent_dim", config.latent_dim), ("block_side", config.block_side),
                         ("patch_size", config.patch_size)):
        if value == 0 or value < -1:
            raise ValueError(f"config.gan.generator.{field}={value}: expected a positive value (-1: the variant's)")
    if config.mlp_ratio < 1:
        raise ValueError(f"config.gan.generator.mlp_ratio={config.mlp_ratio}: expected a positive value")
    if config.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"config.gan.generator.dtype={config.dtype!r}: expected one of {DTYPES}")
    return GenNest(
        latent_dim=config.latent_dim if config.latent_dim > 0 else latent,
        dims=dims, num_heads=heads, depths=depths,
        block_side=config.block_side if config.block_side > 0 else side,
        patch_size=config.patch_size if config.patch_size > 0 else patch,
        mlp_ratio=config.mlp_ratio,
        dtype=jnp.dtype(config.get("dtype", "float32")),
    )
