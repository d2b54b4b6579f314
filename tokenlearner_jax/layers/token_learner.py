"""TokenLearner (v1.1 and v1.0) and TokenFuser (arXiv 2106.11297).

TokenLearner turns `[batch, positions, width]` features into `[batch, num_tokens, width]` learned
tokens, each a spatially weighted combination of the (un-normalised) input features:
- v1.1 (default): LayerNorm -> MLP (bottleneck 64, GELU) -> num_tokens maps -> softmax over space.
- v1.0: LayerNorm -> three 3x3 convs (num_tokens channels, no bias, GELU) -> one 3x3 conv ->
  element-wise sigmoid -> weighted *sum* over space. Needs the spatial grid.
TokenFuser maps learned tokens back to every position: `[batch, num_tokens, width]` and the
original `[batch, positions, width]` -> `[batch, positions, width]`.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.layers.attention import MlpBlock, layer_norm
from tokenlearner_jax.layers.partitioning import param_with_axes

VERSIONS = ("v1.1", "v1.0")


class TokenLearnerV11(nn.Module):
    """TokenLearner v1.1: softmax spatial attention from an MLP. Works on any number of positions.

    Attributes:
      num_tokens: tokens to learn.
      bottleneck_dim: hidden width of the attention MLP.
    """

    num_tokens: int
    bottleneck_dim: int = 64
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, positions, width]` or `[batch, height, width, channels]` -> `[batch, num_tokens, width]`."""
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        maps = layer_norm("LayerNorm_0", dtype=self.dtype)(x)
        maps = MlpBlock(self.bottleneck_dim, self.num_tokens, self.dropout_rate, dtype=self.dtype,
                        hidden_axis=None, out_axis="tokens", name="token_masking")(maps, train=train)
        attention = jax.nn.softmax(jnp.swapaxes(maps, 1, 2).astype(jnp.float32), axis=-1)
        self.sow("intermediates", "token_attention", attention)  # [batch, num_tokens, positions]
        return jnp.einsum("bnp,bpc->bnc", attention.astype(x.dtype), x)


class TokenLearnerV10(nn.Module):
    """TokenLearner v1.0: sigmoid spatial maps from 3x3 convolutions, pooled by a weighted sum.

    Attributes:
      num_tokens: tokens to learn (also the channel count of every conv).
    """

    num_tokens: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` (any height and width) -> `[batch, num_tokens, channels]`."""
        del train
        if x.ndim != 4:
            raise ValueError(f"TokenLearner v1.0 needs a spatial grid [batch, height, width, channels], got {x.shape}")
        maps = layer_norm("LayerNorm_0", dtype=self.dtype)(x)
        for i in range(4):
            maps = nn.Conv(self.num_tokens, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                           kernel_init=param_with_axes(nn.initializers.lecun_normal(),
                                                       (None, None, None, "tokens")),
                           name=f"Conv_{i}")(maps)
            if i < 3:
                maps = nn.gelu(maps, approximate=False)
        batch, _, _, channels = x.shape
        attention = jax.nn.sigmoid(maps.reshape(batch, -1, self.num_tokens).astype(jnp.float32))
        attention = jnp.swapaxes(attention, 1, 2)
        self.sow("intermediates", "token_attention", attention)  # [batch, num_tokens, positions]
        return jnp.einsum("bnp,bpc->bnc", attention.astype(x.dtype), x.reshape(batch, -1, channels))


class TokenFuser(nn.Module):
    """Maps learned tokens back to every position.

    tokens -> LayerNorm -> Dense over the token axis (zero-initialised) -> LayerNorm; the gate is
    sigmoid(MLP(LayerNorm(original))) of shape `[batch, positions, num_tokens]`; output = gate @ tokens.
    With the zero-initialised mixing Dense the output starts at zero, so `original + fuser(...)`
    starts as the identity.
    """

    bottleneck_dim: int = 64
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, tokens, original, *, train: bool):
        """tokens: `[batch, num_tokens, width]`; original: `[batch, positions, width]` ->
        `[batch, positions, width]`."""
        num_tokens = tokens.shape[1]
        tokens = layer_norm("fuser_mix_norm1", dtype=self.dtype)(tokens)
        tokens = jnp.swapaxes(tokens, 1, 2)  # [batch, width, num_tokens]
        tokens = nn.Dense(num_tokens, dtype=self.dtype, name="token_mixing",
                          kernel_init=param_with_axes(nn.initializers.zeros, (None, "tokens")),
                          bias_init=param_with_axes(nn.initializers.zeros, ("tokens",)))(tokens)
        tokens = layer_norm("fuser_mix_norm2", dtype=self.dtype)(jnp.swapaxes(tokens, 1, 2))
        gate = layer_norm("LayerNorm_0", dtype=self.dtype)(original)
        gate = MlpBlock(self.bottleneck_dim, num_tokens, self.dropout_rate, dtype=self.dtype,
                        hidden_axis=None, out_axis="tokens", name="token_masking")(gate, train=train)
        out = jnp.einsum("bpn,bnc->bpc", jax.nn.sigmoid(gate), tokens)
        return nn.Dropout(self.dropout_rate)(out, deterministic=not train)


def make_token_learner(version: str, num_tokens: int, *, bottleneck_dim: int = 64, dropout_rate: float = 0.0,
                       dtype=jnp.float32, name=None) -> nn.Module:
    """The TokenLearner module of `version` ('v1.1' or 'v1.0')."""
    if version == "v1.1":
        return TokenLearnerV11(num_tokens, bottleneck_dim, dropout_rate, dtype=dtype, name=name)
    if version == "v1.0":
        return TokenLearnerV10(num_tokens, dtype=dtype, name=name)
    raise ValueError(f"token_learner.version must be one of {VERSIONS}, got {version!r}")
