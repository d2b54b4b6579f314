"""TokenLearner in a hierarchical backbone: one stage runs on learned tokens instead of its grid.

A stage of a hierarchical backbone (PoolFormer, NesT, MaxViT) maps a grid `[batch, height, width,
channels]` to a grid of the same channel count. `StageTokenLearner` wraps such a stage function:
- without the fuser: x -> TokenLearner -> N tokens laid out as a 1 x N grid `[batch, 1, N, channels]`
  -> stage -> `[batch, 1, N, channels]`; every later layer (a downsampling conv, later stages, the
  head) sees this 1 x N grid. Tokens are ordered by their learned slot, so a stride-2 downsampling
  conv merges neighbouring slots and halves N.
- with the fuser: tokens = TokenLearner(x) -> stage -> TokenFuser(tokens, x) -> + x: the output keeps
  the input grid `[batch, height, width, channels]` (and starts as the identity, since the fuser's
  token-mixing Dense is zero-initialised).
How each token mixer treats the 1 x N grid is described in layers/mixers.py.

The config section (`model.token_learner`) has the fields enabled, stage (0-based: 3 is the last of
four stages, the paper's "stage 4"), num_tokens, version ('v1.1' | 'v1.0'), use_fuser and
bottleneck_dim; `spec_from_config` checks it once for every hierarchical backbone.
"""

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.layers.token_learner import VERSIONS, TokenFuser, make_token_learner


@dataclasses.dataclass(frozen=True)
class StageTokenSpec:
    """Which stage runs on learned tokens, and how."""

    stage: int
    num_tokens: int = 8
    version: str = "v1.1"
    use_fuser: bool = False
    bottleneck_dim: int = 64


def spec_from_config(tl_config, num_stages: int) -> Optional[StageTokenSpec]:
    """`config.model.token_learner` -> a StageTokenSpec, or None when absent or not enabled.

    Raises ValueError naming the field for a stage outside [0, num_stages), a non-positive token
    count or an unknown version."""
    if tl_config is None or not tl_config.get("enabled", False):
        return None
    if not 0 <= tl_config.stage < num_stages:
        raise ValueError(f"config.model.token_learner.stage={tl_config.stage}: expected a 0-based stage index "
                         f"in [0, {num_stages - 1}]")
    if tl_config.num_tokens <= 0:
        raise ValueError(f"config.model.token_learner.num_tokens={tl_config.num_tokens}: expected > 0")
    if tl_config.version not in VERSIONS:
        raise ValueError(f"config.model.token_learner.version={tl_config.version!r}: expected one of {VERSIONS}")
    return StageTokenSpec(stage=tl_config.stage, num_tokens=tl_config.num_tokens, version=tl_config.version,
                          use_fuser=tl_config.use_fuser, bottleneck_dim=tl_config.get("bottleneck_dim", 64))


class StageTokenLearner(nn.Module):
    """Runs a stage function on learned tokens (see the module docstring).

    Attributes:
      spec: token count, TokenLearner version, fuser or not, bottleneck width (`spec.stage` is the
        caller's business).
    """

    spec: StageTokenSpec
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, stage: Callable[[jax.Array], jax.Array], *, train: bool):
        """x: `[batch, height, width, channels]`; `stage` maps a grid `[batch, h, w, channels]` to the same
        shape and must only call modules its caller has already created (so that their parameters stay in
        the caller's scope, not under this module). Returns `[batch, 1, num_tokens, channels]` without the
        fuser, `[batch, height, width, channels]` with it."""
        batch, height, width, channels = x.shape
        spec = self.spec
        learner = make_token_learner(spec.version, spec.num_tokens, bottleneck_dim=spec.bottleneck_dim,
                                     dropout_rate=self.dropout_rate, dtype=self.dtype, name="token_learner")
        tokens = learner(x, train=train).reshape(batch, 1, spec.num_tokens, channels)
        tokens = stage(tokens)
        if tokens.shape != (batch, 1, spec.num_tokens, channels):
            raise ValueError(f"the stage changed the learned-token grid {(batch, 1, spec.num_tokens, channels)} "
                             f"to {tokens.shape}")
        if not spec.use_fuser:
            return tokens
        fused = TokenFuser(spec.bottleneck_dim, self.dropout_rate, dtype=self.dtype, name="token_fuser")(
            tokens.reshape(batch, spec.num_tokens, channels), x.reshape(batch, height * width, channels),
            train=train)
        return x + fused.reshape(x.shape).astype(x.dtype)
