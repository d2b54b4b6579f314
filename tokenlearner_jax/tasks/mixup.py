"""Mixup (arXiv 1710.09412) and CutMix (arXiv 1905.04899) of a batch, on device inside the train step.

Per batch, as timm's batch mode: with probability `prob` the batch is mixed with itself reversed along
the batch axis (example i with example B-1-i); when both alphas are positive, CutMix is chosen with
probability `switch_prob`, otherwise the one with a positive alpha runs.
- Mixup: lam ~ Beta(mixup_alpha, mixup_alpha); images = lam * x + (1 - lam) * reversed(x).
- CutMix: lam ~ Beta(cutmix_alpha, cutmix_alpha); a box of side sqrt(1 - lam) * (H, W) centred at a
  uniform pixel, clipped to the image, is pasted from the reversed batch; lam becomes the uncovered
  fraction of the image.
Targets (already label-smoothed) mix with the same lam. Every draw comes from the step's rng, so a
resumed run mixes exactly as an uninterrupted one. Shapes stay static (the box is a mask), so it jits. Videos `[batch, frames, height, width, channels]`
get the same box in every frame.
"""

import jax
import jax.numpy as jnp


def enabled(mixup_config) -> bool:
    return mixup_config.prob > 0 and (mixup_config.mixup_alpha > 0 or mixup_config.cutmix_alpha > 0)


def _cutmix_mask(rng, lam, height: int, width: int):
    """Boolean `[height, width]` box covering about 1 - lam of the image; and the uncovered fraction."""
    cut = jnp.sqrt(1.0 - lam)
    cut_h, cut_w = jnp.round(cut * height).astype(jnp.int32), jnp.round(cut * width).astype(jnp.int32)
    rng_y, rng_x = jax.random.split(rng)
    center_y = jax.random.randint(rng_y, (), 0, height)
    center_x = jax.random.randint(rng_x, (), 0, width)
    top, bottom = jnp.clip(center_y - cut_h // 2, 0, height), jnp.clip(center_y + cut_h // 2, 0, height)
    left, right = jnp.clip(center_x - cut_w // 2, 0, width), jnp.clip(center_x + cut_w // 2, 0, width)
    rows, cols = jnp.arange(height)[:, None], jnp.arange(width)[None, :]
    mask = (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    covered = (bottom - top) * (right - left) / (height * width)
    return mask, 1.0 - covered


def mix_batch(rng, images, targets, mixup_config):
    """images: `[batch, height, width, channels]` or `[batch, frames, height, width, channels]`; targets: float `[batch, num_classes]`. Returns the mixed
    (images, targets) and lam (1.0 when the batch was left alone)."""
    alpha_mix, alpha_cut = mixup_config.mixup_alpha, mixup_config.cutmix_alpha
    rng_apply, rng_switch, rng_mix, rng_cut, rng_box = jax.random.split(rng, 5)
    apply = jax.random.uniform(rng_apply) < mixup_config.prob
    if alpha_mix > 0 and alpha_cut > 0:
        use_cutmix = jax.random.uniform(rng_switch) < mixup_config.switch_prob
    else:
        use_cutmix = jnp.asarray(alpha_cut > 0)
    lam_mix = jax.random.beta(rng_mix, alpha_mix, alpha_mix) if alpha_mix > 0 else jnp.float32(1.0)
    lam_cut = jax.random.beta(rng_cut, alpha_cut, alpha_cut) if alpha_cut > 0 else jnp.float32(1.0)
    height, width = images.shape[-3:-1]
    mask, lam_box = _cutmix_mask(rng_box, lam_cut, height, width)
    mask = mask.reshape((1,) * (images.ndim - 3) + (height, width, 1))

    reversed_images = images[::-1]
    blended = lam_mix * images + (1.0 - lam_mix) * reversed_images
    pasted = jnp.where(mask, reversed_images, images)
    lam = jnp.where(apply, jnp.where(use_cutmix, lam_box, lam_mix), 1.0).astype(jnp.float32)
    mixed = jnp.where(use_cutmix, pasted, blended).astype(images.dtype)
    images = jnp.where(apply, mixed, images)
    targets = lam * targets + (1.0 - lam) * targets[::-1]
    return images, targets, lam
