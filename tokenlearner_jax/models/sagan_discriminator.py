"""A SAGAN-style convolutional discriminator, unconditional: the one both generators are trained against.

SAGAN (arXiv 1805.08318) with BigGAN's residual down-sampling blocks (arXiv 1809.11096), without the
class projection:

- One residual block per entry m_k of `channel_multipliers` (output width channels * m_k); every block
  but the last halves the resolution. The first block: SN conv 3x3 -> ReLU -> SN conv 3x3 -> average pool
  x2, shortcut average pool x2 -> SN conv 1x1. The others are pre-activated: ReLU -> SN conv 3x3 -> ReLU ->
  SN conv 3x3 -> [average pool x2], shortcut SN conv 1x1 -> [average pool x2].
- SAGAN's self-attention (models/sagan_layers.py) after the block whose output has side
  `attention_resolution`.
- ReLU -> sum over positions -> SN Dense to one logit per image.

Every convolution and dense layer is spectrally normalised; there is no normalisation over the batch, so
real and generated images may share one forward pass. The variants' widths are ours.
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.models.registry import register
from tokenlearner_jax.models.sagan_generator import resolve
from tokenlearner_jax.models.sagan_layers import SelfAttention, SNConv, SNDense, downsample_average

# name -> (channels, channel_multipliers, attention_resolution)
VARIANTS = {
    "digits": (24, (1, 2, 4), 8),
    "tiny": (32, (1, 2, 4, 4), 16),
    "64": (64, (1, 2, 4, 8, 16), 32),
}


class DiscriminatorBlock(nn.Module):
    """BigGAN's down-sampling residual block (module docstring)."""

    features: int
    downsample: bool
    preactivation: bool

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, h, w, c]` -> `[batch, h', w', features]` (h' = h / 2 when down-sampling)."""
        pool = downsample_average if self.downsample else (lambda y: y)
        h = nn.relu(x) if self.preactivation else x
        h = SNConv(self.features, 3, name="conv_0")(h, update_stats=train)
        h = SNConv(self.features, 3, name="conv_1")(nn.relu(h), update_stats=train)
        h = pool(h)
        shortcut = SNConv(self.features, 1, name="shortcut")
        if self.preactivation:
            return h + pool(shortcut(x, update_stats=train))
        return h + shortcut(pool(x), update_stats=train)


class SaganDiscriminator(nn.Module):
    """Module docstring.

    Attributes:
      channels: base width; block k outputs channels * channel_multipliers[k].
      channel_multipliers: one per block; all blocks but the last halve the resolution.
      attention_resolution: side of the feature map that self-attention follows (0: none).
    """

    channels: int
    channel_multipliers: Tuple[int, ...]
    attention_resolution: int

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images: float32 `[batch, h, w, 3]` in [-1, 1] -> logits `[batch]` (real: high)."""
        last = len(self.channel_multipliers) - 1
        if images.shape[1] % 2 ** last or images.shape[2] % 2 ** last:
            raise ValueError(f"SaganDiscriminator: {images.shape[1]}x{images.shape[2]} images cannot be halved "
                             f"{last} times")
        x = images
        attended = False
        for k, multiplier in enumerate(self.channel_multipliers):
            x = DiscriminatorBlock(self.channels * multiplier, downsample=k < last, preactivation=k > 0,
                                   name=f"block_{k}")(x, train=train)
            if x.shape[1] == self.attention_resolution and not attended:
                x = SelfAttention(name="attention")(x, update_stats=train)
                attended = True
        x = jnp.sum(nn.relu(x), axis=(1, 2))
        return SNDense(1, name="logit")(x, update_stats=train)[:, 0]


def default_config() -> dict:
    """Every field of the SAGAN-style discriminator's model section (`config.gan.discriminator`,
    tasks/gan.py). `variant` ('digits' for 16x16 images, 'tiny' for 32x32, '64' for 64x64) sets channels,
    channel_multipliers and attention_resolution; positive values and a non-empty tuple override it
    (attention_resolution 0: no self-attention)."""
    return dict(variant="tiny", channels=-1, channel_multipliers=(), attention_resolution=-1)


@register("sagan_discriminator", default_config)
def build_sagan_discriminator(config) -> SaganDiscriminator:
    """Builds the discriminator from its config (`default_config`); ValueError naming the field for a bad value."""
    return SaganDiscriminator(**resolve(config, "config.gan.discriminator", VARIANTS))
