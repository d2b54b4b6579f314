"""A SAGAN-style convolutional generator, unconditional: the baseline GenNesT is compared with.

SAGAN (arXiv 1805.08318) with BigGAN's residual up-sampling blocks (arXiv 1809.11096), as SAGAN's
released code builds them, without class conditioning:

- Latent `[batch, latent_dim]` -> spectrally normalised Dense -> `[batch, 4, 4, channels * m_0]`.
- One residual block per entry m_k of `channel_multipliers`, each doubling the resolution:
  BatchNorm -> ReLU -> nearest up-sampling x2 -> SN conv 3x3 -> BatchNorm -> ReLU -> SN conv 3x3, plus the
  shortcut up-sampling x2 -> SN conv 1x1; output width channels * m_k.
- SAGAN's self-attention (models/sagan_layers.py) after the block whose output has side
  `attention_resolution` (SAGAN puts it at half the image side).
- BatchNorm -> ReLU -> SN conv 3x3 to 3 channels -> tanh: images `[batch, 4 * 2^K, 4 * 2^K, 3]` in (-1, 1).

Every convolution and dense layer is spectrally normalised (SAGAN normalises the generator too).
BatchNorm uses the batch's statistics in training and its running averages (`bn_momentum`, weight of the
old average) otherwise. The variants' widths are ours, chosen so that each has about the parameter count
of the GenNesT variant it is compared with (models/gennest.py): '64' ~ 'imagenet64', 'tiny' ~ 'tiny' (32x32),
'digits' ~ 'digits' (16x16).
"""

from typing import Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.models.registry import register
from tokenlearner_jax.models.sagan_layers import SelfAttention, SNConv, SNDense, upsample_nearest

# name -> (latent_dim, channels, channel_multipliers, attention_resolution)
VARIANTS = {
    "digits": (64, 20, (4, 2), 8),
    "tiny": (64, 40, (4, 2, 1), 16),
    "64": (128, 48, (16, 8, 4, 2), 32),
}


class GeneratorBlock(nn.Module):
    """BigGAN's up-sampling residual block (module docstring)."""

    features: int
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, h, w, c]` -> `[batch, 2h, 2w, features]`."""
        def norm(name):
            return nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5, name=name)

        h = upsample_nearest(nn.relu(norm("norm_0")(x)))
        h = SNConv(self.features, 3, name="conv_0")(h, update_stats=train)
        h = nn.relu(norm("norm_1")(h))
        h = SNConv(self.features, 3, name="conv_1")(h, update_stats=train)
        return h + SNConv(self.features, 1, name="shortcut")(upsample_nearest(x), update_stats=train)


class SaganGenerator(nn.Module):
    """Module docstring.

    Attributes:
      latent_dim: size of the input vector.
      channels: base width; block k outputs channels * channel_multipliers[k].
      channel_multipliers: one per up-sampling block (the first also sets the 4x4 grid's width).
      attention_resolution: side of the feature map that self-attention follows (0: none).
    """

    latent_dim: int
    channels: int
    channel_multipliers: Tuple[int, ...]
    attention_resolution: int
    bn_momentum: float = 0.9

    @property
    def image_size(self) -> int:
        return 4 * 2 ** len(self.channel_multipliers)

    @nn.compact
    def __call__(self, latents, *, train: bool = False):
        """latents: float32 `[batch, latent_dim]` -> images `[batch, image_size, image_size, 3]` in (-1, 1)."""
        if latents.ndim != 2 or latents.shape[1] != self.latent_dim:
            raise ValueError(f"SaganGenerator: expected latents [batch, {self.latent_dim}], got shape {latents.shape}")
        width = self.channels * self.channel_multipliers[0]
        x = SNDense(4 * 4 * width, name="latent_projection")(latents, update_stats=train)
        x = x.reshape(latents.shape[0], 4, 4, width)
        for k, multiplier in enumerate(self.channel_multipliers):
            x = GeneratorBlock(self.channels * multiplier, self.bn_momentum, name=f"block_{k}")(x, train=train)
            if x.shape[1] == self.attention_resolution:
                x = SelfAttention(name="attention")(x, update_stats=train)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=self.bn_momentum, epsilon=1e-5,
                                 name="output_norm")(x))
        return jnp.tanh(SNConv(3, 3, name="output_conv")(x, update_stats=train))


def default_config() -> dict:
    """Every field of the SAGAN-style generator's model section (`config.gan.generator`, tasks/gan.py).
    `variant` ('digits': 16x16, 'tiny': 32x32, '64': 64x64) sets latent_dim, channels, channel_multipliers and
    attention_resolution; positive values and a non-empty tuple override it (attention_resolution 0: no
    self-attention)."""
    return dict(variant="tiny", latent_dim=-1, channels=-1, channel_multipliers=(), attention_resolution=-1,
                bn_momentum=0.9)


def resolve(config, section: str, variants: dict) -> dict:
    """channels, channel_multipliers and attention_resolution of a SAGAN-style model config: the
    variant's unless overridden. `section` names the config section in error messages."""
    if config.variant not in variants:
        raise ValueError(f"{section}.variant={config.variant!r}: expected one of {sorted(variants)}")
    *_, channels, multipliers, attention = variants[config.variant]
    channels = config.channels if config.channels > 0 else channels
    multipliers = tuple(config.channel_multipliers) or multipliers
    attention = config.attention_resolution if config.attention_resolution >= 0 else attention
    if config.channels == 0 or config.channels < -1 or min(multipliers) < 1:
        raise ValueError(f"{section}.channels={config.channels}, channel_multipliers={multipliers}: expected "
                         f"positive values (-1 / (): the variant's)")
    if attention and any(channels * m % 8 for m in multipliers):
        raise ValueError(f"{section}.channels={channels}: self-attention needs every block's width "
                         f"(channels x {multipliers}) to be a multiple of 8")
    return dict(channels=channels, channel_multipliers=multipliers, attention_resolution=attention)


@register("sagan_generator", default_config)
def build_sagan_generator(config) -> SaganGenerator:
    """Builds the generator from its config (`default_config`); ValueError naming the field for a bad value."""
    arch = resolve(config, "config.gan.generator", VARIANTS)
    if config.latent_dim == 0 or config.latent_dim < -1:
        raise ValueError(f"config.gan.generator.latent_dim={config.latent_dim}: expected a positive value "
                         f"(-1: the variant's)")
    latent = config.latent_dim if config.latent_dim > 0 else VARIANTS[config.variant][0]
    sizes = [4 * 2 ** (k + 1) for k in range(len(arch["channel_multipliers"]))]
    if arch["attention_resolution"] and arch["attention_resolution"] not in sizes:
        raise ValueError(f"config.gan.generator.attention_resolution={arch['attention_resolution']}: expected 0 or "
                         f"one of the blocks' output sides {sizes}")
    if not 0.0 <= config.bn_momentum < 1.0:
        raise ValueError(f"config.gan.generator.bn_momentum={config.bn_momentum}: expected a value in [0, 1)")
    return SaganGenerator(latent_dim=latent, bn_momentum=config.bn_momentum, **arch)
