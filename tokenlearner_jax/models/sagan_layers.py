"""Layers shared by the SAGAN-style generator and discriminator (SAGAN, arXiv 1805.08318; BigGAN's
residual blocks, arXiv 1809.11096).

- Every convolution and dense layer is spectrally normalised (Miyato et al., arXiv 1802.05957), in the
  generator as in the discriminator, as SAGAN does: the kernel is divided by its largest singular value,
  estimated by one step of power iteration per training forward pass (flax.linen.SpectralNorm; its `u`
  vector and `sigma` live in the 'batch_stats' collection and are updated when `update_stats`).
- Self-attention (SAGAN's eq. 1-3): with C' = C / 8, f = W_f x, g = W_g x, h = W_h x (1x1 convs C -> C'),
  beta = softmax over positions i of f(x_i)^T g(x_j), o_j = W_v sum_i beta_ji h(x_i) (1x1 conv C' -> C),
  y = x + gamma o with gamma a learned scalar that starts at 0.
- Kernels start orthogonal (BigGAN's initialisation); parameters carry no logical axis names (these
  small convolutional networks are replicated).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

_KERNEL_INIT = nn.initializers.orthogonal()


class SNConv(nn.Module):
    """A spectrally normalised k x k convolution (stride 1, SAME padding, bias)."""

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x, *, update_stats: bool):
        """x: `[batch, h, w, c]` -> `[batch, h, w, features]`."""
        conv = nn.Conv(self.features, (self.kernel_size, self.kernel_size), padding="SAME",
                       kernel_init=_KERNEL_INIT, name="conv")
        return nn.SpectralNorm(conv, name="spectral_norm")(x, update_stats=update_stats)


class SNDense(nn.Module):
    """A spectrally normalised dense layer."""

    features: int

    @nn.compact
    def __call__(self, x, *, update_stats: bool):
        dense = nn.Dense(self.features, kernel_init=_KERNEL_INIT, name="dense")
        return nn.SpectralNorm(dense, name="spectral_norm")(x, update_stats=update_stats)


class SelfAttention(nn.Module):
    """SAGAN's self-attention over all positions of a feature map (module docstring)."""

    @nn.compact
    def __call__(self, x, *, update_stats: bool):
        """x: `[batch, h, w, c]` (c a multiple of 8) -> `[batch, h, w, c]`."""
        batch, height, width, channels = x.shape
        if channels % 8:
            raise ValueError(f"SelfAttention: {channels} channels are not a multiple of 8")
        reduced = channels // 8

        def project(name, features, inputs):
            out = SNConv(features, 1, name=name)(inputs, update_stats=update_stats)
            return out.reshape(batch, height * width, features)

        f, g, h = (project(name, reduced, x) for name in ("query", "key", "value"))
        beta = jax.nn.softmax(jnp.einsum("bic,bjc->bji", f, g), axis=-1)  # [batch, j, i], normalised over i
        o = jnp.einsum("bji,bic->bjc", beta, h).reshape(batch, height, width, reduced)
        o = SNConv(channels, 1, name="out")(o, update_stats=update_stats)
        gamma = self.param("gamma", nn.initializers.zeros, ())
        return x + gamma * o


def upsample_nearest(x: jax.Array) -> jax.Array:
    """`[batch, h, w, c]` -> `[batch, 2h, 2w, c]`, each value repeated over a 2x2 square."""
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


def downsample_average(x: jax.Array) -> jax.Array:
    """`[batch, h, w, c]` -> `[batch, h/2, w/2, c]`: the mean of each 2x2 square."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2))
