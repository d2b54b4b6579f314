"""NesT: nested hierarchical transformer (arXiv 2105.12723), as the official Flax code and timm's port.

- Patch embedding: conv with kernel = stride = patch size -> grid `[batch, H, W, dims[0]]`.
- Level i of L: the grid is cut into square blocks of side S = H / 2^(L-1) (layers/blocking.py), so
  level 0 has 4^(L-1) blocks and the top level one block per S x S square (one for a square input);
  each level adds its own learned position embedding `[1, blocks, S*S, width]` and runs pre-norm
  transformer blocks (layers/transformer.py EncoderBlock) in which a block attends only within itself
  (the blocks are folded into the batch). Stochastic depth rises linearly over all layers of all levels.
- Block aggregation before every level but the first: un-block -> conv 3x3 (stride 1, SAME, bias) ->
  LayerNorm (eps 1e-6) -> max pool 3x3 / 2 -> re-block. 'same' pooling pads as TF's SAME (nothing
  before, one position after: the official code and timm's nest_*_jx weights); 'symmetric' pads one
  position on each side (timm's nest_* models).
- Head: LayerNorm -> mean over every position -> Dense.
- CIFAR variants: patch 1, four levels of three layers, constant width, multi-query attention (one key /
  value head shared by every query head; MultiHeadAttention.num_kv_heads=1).

TokenLearner (`model.token_learner`, layers/token_learner.py): at level `location`, after the aggregation
and the position embedding, TokenLearner turns the grid into `num_tokens` tokens, and the level's
transformer runs on them as one block (all tokens attend to each other). Without the fuser every later
layer sees the tokens, so `location` must be the last level; with the fuser the level keeps its grid
and any level works.

The normalised top-level grid `[batch, h, w, width]` is sown into 'intermediates' as 'feature_map' and
the pooled features `[batch, width]` as 'pre_logits': the head is linear after the mean, so
`feature_map @ head/kernel + head/bias` is a class-activation map whose spatial mean is the logits
(visualize.py class_attention).
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.token_learner import StageTokenLearner, TokenLearnerSpec
from tokenlearner_jax.layers.attention import GELUS, layer_norm
from tokenlearner_jax.layers.blocking import block_partition, block_unpartition
from tokenlearner_jax.layers.conv import Conv
from tokenlearner_jax.layers.embedding import PatchEmbedding
from tokenlearner_jax.layers.partitioning import param_with_axes
from tokenlearner_jax.layers.transformer import EncoderBlock
from tokenlearner_jax.models.registry import check, check_common, register

# name -> (dims, heads, depths, patch size, drop path, key/value heads (0: one per query head));
# the NesT paper (arXiv 2105.12723) and its code. Widths double per level at 224; constant on CIFAR.
VARIANTS = {
    "T": ((96, 192, 384), (3, 6, 12), (2, 2, 8), 4, 0.2, 0),
    "S": ((96, 192, 384), (3, 6, 12), (2, 2, 20), 4, 0.3, 0),
    "B": ((128, 256, 512), (4, 8, 16), (2, 2, 20), 4, 0.5, 0),
    "cifar_T": ((192,) * 4, (3,) * 4, (3,) * 4, 1, 0.1, 1),
    "cifar_S": ((384,) * 4, (6,) * 4, (3,) * 4, 1, 0.1, 1),
    "cifar_B": ((768,) * 4, (12,) * 4, (3,) * 4, 1, 0.1, 1),
}
POOL_PADDINGS = ("same", "symmetric")
_INIT = nn.initializers.truncated_normal(0.02)  # the official code's init of convs, the head and positions


def block_side(height: int, width: int, num_levels: int) -> int:
    """Side S of the (square) blocks for a `height x width` patch grid: the top level's height, H / 2^(L-1).

    Raises ValueError when a level's grid is not tiled by S x S blocks."""
    side = height >> (num_levels - 1)
    if side <= 0 or height != side << (num_levels - 1) or width % (side << (num_levels - 1)):
        raise ValueError(f"a {height}x{width} patch grid does not fit {num_levels} levels: the height must be "
                         f"2^{num_levels - 1} x the block side and the width a multiple of that")
    return side


def drop_path_rates(rate: float, depths: Tuple[int, ...]) -> Tuple[Tuple[float, ...], ...]:
    """Stochastic-depth rate of every layer, per level: rising linearly from 0 to `rate` over all layers."""
    total, first, rates = sum(depths), 0, []
    for depth in depths:
        rates.append(tuple(rate * (first + j) / max(total - 1, 1) for j in range(depth)))
        first += depth
    return tuple(rates)


class NestLevel(nn.Module):
    """One level: [aggregation], position embedding, transformer blocks within each block.

    Attributes:
      width, num_heads, num_kv_heads, mlp_dim: of the level's transformer blocks.
      drop_path_rates: one per transformer block.
      side: block side S.
      aggregate: start with the block aggregation (conv, LayerNorm, max pool: halves the grid).
      pool_padding: 'same' | 'symmetric' (module docstring).
      token_learner: run the blocks on learned tokens, or None.
      gelu: the MLPs' GELU, 'erf' or 'tanh'.
    """

    width: int
    num_heads: int
    mlp_dim: int
    drop_path_rates: Tuple[float, ...]
    side: int
    aggregate: bool
    num_kv_heads: int = 0
    pool_padding: str = "same"
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    token_learner: Optional[TokenLearnerSpec] = None
    gelu: str = "erf"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height', width', self.width]` (halved by the
        aggregation; `[batch, 1, num_tokens, self.width]` with learned tokens and no fuser)."""
        if self.aggregate:
            x = Conv(self.width, (3, 3), padding=((1, 1), (1, 1)), dtype=self.dtype, name="aggregation_conv",
                     kernel_init=param_with_axes(_INIT, ("patch_h", "patch_w", "conv_in", "embed")),
                     bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))(x)
            x = layer_norm("aggregation_norm", dtype=self.dtype)(x)
            x = nn.max_pool(x, (3, 3), strides=(2, 2),
                            padding="SAME" if self.pool_padding == "same" else ((1, 1), (1, 1)))
        height, width = x.shape[1:3]
        blocks = block_partition(x, self.side)  # [batch, blocks, S*S, width]
        pos = self.param("pos_embedding", param_with_axes(_INIT, (None, None, "length", "embed")),
                         (1,) + blocks.shape[1:])
        blocks = blocks + pos.astype(blocks.dtype)
        layers = [EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate,
                               rate, dtype=self.dtype, num_kv_heads=self.num_kv_heads, gelu=self.gelu,
                               name=f"encoderblock_{j}")
                  for j, rate in enumerate(self.drop_path_rates)]

        def run(blocked):  # [batch, blocks, length, width]: every block attends within itself
            batch, count, length, channels = blocked.shape
            y = blocked.reshape(batch * count, length, channels)
            for layer in layers:
                y = layer(y, train=train)
            return y.reshape(blocked.shape)

        if self.token_learner is None:
            return block_unpartition(run(blocks), height, width)
        # The learned tokens' 1 x N grid [batch, 1, N, width] is read as one block of N tokens.
        return StageTokenLearner(self.token_learner, dtype=self.dtype, name="token_learner")(
            block_unpartition(blocks, height, width), run, train=train)


class Nest(nn.Module):
    """NesT classifier.

    Attributes:
      num_classes: logits size; 0 returns the pre-logit features `[batch, dims[-1]]` instead.
      dims, num_heads, depths: per level.
      patch_size: side of the patches of the patch embedding.
      num_kv_heads: key / value heads of every attention (0: as many as query heads; 1: multi-query).
      drop_path_rate: stochastic depth of the last layer; layer k of K gets rate * k / (K - 1).
      pool_padding: 'same' | 'symmetric' (module docstring).
      token_learner: which level runs on learned tokens, or None.
    """

    num_classes: int
    dims: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    depths: Tuple[int, ...]
    patch_size: int
    num_kv_heads: int = 0
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    pool_padding: str = "same"
    token_learner: Optional[TokenLearnerSpec] = None
    gelu: str = "erf"
    dtype: jnp.dtype = jnp.float32

    def check_input(self, input_shape):
        """Raises ValueError naming the config field when images of `input_shape` do not fit the levels'
        square blocks, or the level that learns tokens has fewer positions than `num_tokens`."""
        levels, size = len(self.depths), input_shape[0]
        multiple = self.patch_size << (levels - 1)
        if size % multiple or input_shape[1] % multiple:
            raise ValueError(f"config.dataset.image_size={size}: expected a multiple of patch_size x 2^(levels - 1) "
                             f"= {multiple} ({levels} levels of square blocks)")
        if self.token_learner is not None:
            positions = (input_shape[0] // self.patch_size >> self.token_learner.location) * \
                (input_shape[1] // self.patch_size >> self.token_learner.location)
            if self.token_learner.num_tokens > positions:
                raise ValueError(f"config.model.token_learner.num_tokens={self.token_learner.num_tokens}: expected "
                                 f"at most the {positions} positions of level {self.token_learner.location}")

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images: float32 `[batch, height, width, channels]` -> logits `[batch, num_classes]`."""
        p = self.patch_size
        x = PatchEmbedding(self.dims[0], (p, p), dtype=self.dtype, name="patch_embedding")(
            images.astype(self.dtype))
        side = block_side(x.shape[1], x.shape[2], len(self.depths))
        all_rates = drop_path_rates(self.drop_path_rate, self.depths)
        for i, (rates, width, heads) in enumerate(zip(all_rates, self.dims, self.num_heads)):
            tl = self.token_learner if self.token_learner is not None and self.token_learner.location == i else None
            x = NestLevel(width, heads, self.mlp_ratio * width, rates, side, aggregate=i > 0,
                          num_kv_heads=self.num_kv_heads, pool_padding=self.pool_padding,
                          dropout_rate=self.dropout_rate, attention_dropout_rate=self.attention_dropout_rate,
                          token_learner=tl, gelu=self.gelu, dtype=self.dtype, name=f"level_{i}")(x, train=train)

        x = layer_norm("head_norm", dtype=self.dtype)(x).astype(jnp.float32)
        self.sow("intermediates", "feature_map", x)
        x = jnp.mean(x, axis=(1, 2))
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, name="head", kernel_init=param_with_axes(_INIT, ("embed", "classes")),
                        bias_init=param_with_axes(nn.initializers.zeros, ("classes",)))(x)


def default_config() -> dict:
    """Every field of `config.model` for NesT. `variant` ('T', 'S', 'B' at 224; 'cifar_T', 'cifar_S',
    'cifar_B' at 32x32 with multi-query attention) sets dims, num_heads, depths, patch_size,
    num_kv_heads and drop_path_rate; non-empty dims / num_heads / depths, a positive patch_size and
    non-negative num_kv_heads (0: one key/value head per query head, 1: multi-query) / drop_path_rate
    override it. `token_learner.location` is the 0-based level that runs on learned tokens (-1: the last)."""
    return dict(
        variant="T", num_classes=1000, dims=(), num_heads=(), depths=(), patch_size=-1, num_kv_heads=-1,
        mlp_ratio=4, drop_path_rate=-1.0, dropout_rate=0.0, attention_dropout_rate=0.0,
        pool_padding="same",  # 'same': the official code and timm's nest_*_jx; 'symmetric': timm's nest_*
        gelu="erf",  # the MLPs' GELU: 'erf' as timm runs the weights; the official Flax code trains with 'tanh'
        dtype="float32", token_learner=token_learner_lib.default_config(location=-1))


def resolve_architecture(config) -> dict:
    """dims, num_heads, depths, patch_size and num_kv_heads of `config.model`: the variant's unless
    overridden. Raises ValueError naming the field."""
    check(config.variant in VARIANTS, "variant", config.variant, f"one of {sorted(VARIANTS)}")
    dims, heads, depths, patch, _, kv_heads = VARIANTS[config.variant]
    dims, heads, depths = tuple(config.dims) or dims, tuple(config.num_heads) or heads, tuple(config.depths) or depths
    check(len(dims) == len(heads) == len(depths) and min(dims + heads + depths) >= 1, "dims", dims,
          f"positive values, one of each per level, as many as num_heads={heads} and depths={depths}")
    for width, h in zip(dims, heads):
        check(width % h == 0, "num_heads", heads, f"divisors of the level widths dims={dims}")
    patch = config.patch_size if config.patch_size > 0 else patch
    kv_heads = config.num_kv_heads if config.num_kv_heads >= 0 else kv_heads
    check(not kv_heads or all(h % kv_heads == 0 for h in heads), "num_kv_heads", kv_heads,
          f"0 (one per query head) or a divisor of every level's heads {heads}")
    return dict(dims=dims, num_heads=heads, depths=depths, patch_size=patch, num_kv_heads=kv_heads)


@register("nest", default_config)
def build_nest(config) -> Nest:
    """Builds NesT from `config.model` (`default_config`), raising ValueError naming a bad field."""
    arch = resolve_architecture(config)
    check_common(config)
    check(config.pool_padding in POOL_PADDINGS, "pool_padding", config.pool_padding, f"one of {POOL_PADDINGS}")
    check(config.gelu in GELUS, "gelu", config.gelu, f"one of {GELUS}")
    levels = len(arch["depths"])
    spec = token_learner_lib.parse_spec(config.token_learner, num_locations=levels, what="level")
    if spec is not None and not spec.use_fuser and spec.location != levels - 1:
        raise ValueError(f"config.model.token_learner.location={config.token_learner.location}: without the fuser "
                         f"the learned tokens replace the grid, which only the last level ({levels - 1}) can do; "
                         f"set config.model.token_learner.use_fuser=True for an earlier level")
    drop_path = config.drop_path_rate if config.drop_path_rate >= 0 else VARIANTS[config.variant][4]
    return Nest(
        num_classes=config.num_classes,
        mlp_ratio=config.mlp_ratio,
        drop_path_rate=drop_path,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        pool_padding=config.pool_padding,
        gelu=config.gelu,
        token_learner=spec,
        dtype=jnp.dtype(config.dtype),
        **arch,
    )
