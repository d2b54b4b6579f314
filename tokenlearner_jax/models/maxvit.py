"""MaxViT (arXiv 2204.01697): MBConv, then block attention in local windows, then grid attention on a
dilated global grid, in every block of four stages; optionally TokenLearner in one stage.

Layout (the official TF code, and timm's `maxvit_*_tf_*` port whose weights weights/maxvit.py reads):
- stem: conv 3x3 stride 2 (+ bias) -> BatchNorm -> GELU -> conv 3x3 stride 1 (+ bias);
- MBConv: shortcut = x, or avg-pool 2x2 (+ a 1x1 conv when the width changes) in a stage's first
  block; x -> BatchNorm (pre-norm, no activation) -> 1x1 conv to 4 x the output width (no bias) -> BN
  -> GELU -> depthwise 3x3 (stride 2 in a stage's first block, no bias) -> BN -> GELU ->
  squeeze-excite (mean over positions -> Dense(width / 4) -> SiLU -> Dense -> sigmoid gate) -> 1x1
  conv to the output width (+ bias) -> DropPath -> + shortcut. Convolutions pad like TF's 'SAME'
  (a stride-2 3x3 on an even map pads 0 before and 1 after), BatchNorm eps 1e-3, momentum 0.99;
- block attention (windows of `window x window` neighbours, layers/blocking.block_partition) and then
  grid attention (a `grid x grid` grid dilated over the whole map, blocking.grid_partition), each
  x + DropPath(attention(LN(x))) with a relative position bias per layer (layers/relative_position.py),
  then x + DropPath(MLP(LN(x))); LayerNorm eps 1e-5, head size 32, MLP ratio 4, tanh-approximated GELU
  (the TF models' and timm's `gelu_tanh`);
- head: global average pool -> LayerNorm -> Dense(last width) + tanh (pre-logits) -> Dense(classes).
Stochastic depth rises linearly over the blocks; the MBConv and both attention blocks of a MaxViT
block share its rate. Window and grid follow the input resolution: `window_size` / `grid_size` 0 take
the height of the last stage's map (input height / 32 with four stages: 7 at 224, 12 at 384, 16 at
512), as timm and the official code do.

BatchNorm's statistics are the 'batch_stats' collection: updated in train mode (apply with
`mutable=['batch_stats']`, as the trainer does for every collection in its model_state), used frozen
in eval mode.

TokenLearner (`token_learner.location` = s, layers/token_learner.py): after the first block of stage s
(whose strided MBConv downsamples), TokenLearner turns the grid into a 1 x N grid of learned tokens
and the stage's remaining blocks run on them; without the fuser every later block does too. On
learned tokens both attention blocks attend over all N tokens at once, without a relative bias (the
tokens have no 2D positions), and the MBConv's depthwise conv mixes neighbouring token slots.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import blocking
from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.token_learner import StageTokenLearner, TokenLearnerSpec
from tokenlearner_jax.layers.attention import DropPath, MlpBlock, MultiHeadAttention, layer_norm
from tokenlearner_jax.layers.conv import Conv
from tokenlearner_jax.layers.depthwise import DepthwiseConv
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.layers.relative_position import RelativePositionBias
from tokenlearner_jax.models.registry import check, check_common, register

# name -> (stem widths, depths, dims, drop path rate = 1 - survival); the MaxViT paper (arXiv 2204.01697)
VARIANTS = {
    "T": ((64, 64), (2, 2, 5, 2), (64, 128, 256, 512), 0.2),
    "S": ((64, 64), (2, 2, 5, 2), (96, 192, 384, 768), 0.3),
    "B": ((64, 64), (2, 6, 14, 2), (96, 192, 384, 768), 0.4),
    "L": ((128, 128), (2, 6, 14, 2), (128, 256, 512, 1024), 0.6),
}
_INIT = nn.initializers.truncated_normal(0.02)


def batch_norm(name: str, train: bool, channel_axis: Optional[str], momentum: float, epsilon: float, dtype):
    """BatchNorm over batch, height and width; running statistics in 'batch_stats' ('mean', 'var').
    Flax's momentum is the weight of the old running value: 0.99 = TF's BN momentum 0.99 (torch 0.01).
    `channel_axis` is the logical name of the channels, for sharding the scale and bias."""
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype, name=name,
                        scale_init=param_with_axes(nn.initializers.ones, (channel_axis,)),
                        bias_init=param_with_axes(nn.initializers.zeros, (channel_axis,)))


def conv3x3(features: int, stride: int, name: str, dtype, *, use_bias: bool = True, depthwise: bool = False):
    """3x3 convolution with TF 'SAME' padding; depthwise keeps the channels (one filter each,
    layers/depthwise.py)."""
    out_axis = "mlp" if depthwise else "embed"
    kernel_init = param_with_axes(_INIT, ("patch_h", "patch_w", "conv_in", out_axis))
    bias_init = param_with_axes(nn.initializers.zeros, (out_axis,))
    if depthwise:
        return DepthwiseConv(3, stride, use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init, dtype=dtype,
                             name=name)
    return Conv(features, (3, 3), strides=(stride, stride), padding="SAME", use_bias=use_bias, dtype=dtype,
                name=name, kernel_init=kernel_init, bias_init=bias_init)


def dense(features: int, axes: Tuple[Optional[str], Optional[str]], name: str, dtype, *, use_bias: bool = True):
    """A 1x1 convolution, i.e. a Dense on the channels."""
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, name=name,
                    kernel_init=param_with_axes(_INIT, axes),
                    bias_init=param_with_axes(nn.initializers.zeros, (axes[1],)))


def avg_pool_2x2(x):
    """Average over 2x2 blocks, stride 2; an odd side (a 1 x N token grid) is padded TF-'SAME'-style and
    the padding not counted. `[batch, h, w, c]` -> `[batch, ceil(h/2), ceil(w/2), c]`."""
    return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="SAME", count_include_pad=False)


class Stem(nn.Module):
    """conv 3x3 / 2 -> BN -> GELU -> conv 3x3: `[batch, H, W, 3]` -> `[batch, H/2, W/2, widths[1]]`."""

    widths: Tuple[int, int]
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = conv3x3(self.widths[0], 2, "conv_1", self.dtype)(x)
        x = batch_norm("norm_1", train, "embed", self.bn_momentum, self.bn_epsilon, self.dtype)(x)
        return conv3x3(self.widths[1], 1, "conv_2", self.dtype)(nn.gelu(x, approximate=True))


class MBConv(nn.Module):
    """Pre-norm inverted bottleneck with squeeze-excite (module docstring).

    Attributes:
      width: output channels.
      stride: 2 in a stage's first block (halves height and width), else 1.
      expand_ratio: hidden channels = expand_ratio * width.
      se_ratio: squeeze-excite bottleneck = int(se_ratio * width).
    """

    width: int
    stride: int = 1
    expand_ratio: int = 4
    se_ratio: float = 0.25
    drop_path_rate: float = 0.0
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, h, w, c]` -> `[batch, h / stride, w / stride, width]` (rounded up)."""
        def norm(name, axis):
            return batch_norm(name, train, axis, self.bn_momentum, self.bn_epsilon, self.dtype)

        hidden = self.expand_ratio * self.width
        shortcut = x
        if self.stride > 1:
            shortcut = avg_pool_2x2(shortcut)
        if x.shape[-1] != self.width:
            if self.stride == 1:
                raise ValueError(f"MBConv: a block without downsampling keeps the width "
                                 f"({x.shape[-1]} -> {self.width})")
            shortcut = dense(self.width, ("conv_in", "embed"), "shortcut", self.dtype)(shortcut)

        y = norm("pre_norm", "embed")(x)
        y = dense(hidden, ("embed", "mlp"), "expand", self.dtype, use_bias=False)(y)
        y = nn.gelu(norm("expand_norm", "mlp")(y), approximate=True)
        y = conv3x3(hidden, self.stride, "depthwise", self.dtype, use_bias=False, depthwise=True)(y)
        y = nn.gelu(norm("depthwise_norm", "mlp")(y), approximate=True)
        squeezed = jnp.mean(y, axis=(1, 2), keepdims=True)
        squeezed = nn.silu(dense(int(self.se_ratio * self.width), ("mlp", None), "se_reduce", self.dtype)(squeezed))
        y = y * nn.sigmoid(dense(hidden, (None, "mlp"), "se_expand", self.dtype)(squeezed))
        y = dense(self.width, ("mlp", "embed"), "project", self.dtype)(y)
        return shortcut + DropPath(self.drop_path_rate)(y, train=train)


class PartitionAttention(nn.Module):
    """x + DropPath(attention within groups(LN(x))), then x + DropPath(MLP(LN(x))).

    Attributes:
      partition: 'block' (size x size windows), 'grid' (a size x size dilated grid) or 'tokens' (all
        positions of a learned-token grid in one group, no relative bias).
      size: window / grid side.
    """

    partition: str
    size: int
    head_dim: int = 32
    mlp_ratio: int = 4
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> the same shape."""
        batch, height, width, channels = x.shape
        if channels % self.head_dim:
            raise ValueError(f"MaxViT attention: width {channels} is not a multiple of the head size {self.head_dim}")
        heads = channels // self.head_dim
        y = layer_norm("norm_1", epsilon=1e-5, dtype=self.dtype)(x)
        if self.partition == "tokens":
            groups, bias = y.reshape(batch, 1, height * width, channels), None
        else:
            partition = blocking.block_partition if self.partition == "block" else blocking.grid_partition
            groups = partition(y, self.size)
            bias = RelativePositionBias(heads, self.size, name="relative_position_bias")()
        num_groups, length = groups.shape[1:3]
        attention = MultiHeadAttention(heads, self.attention_dropout_rate, dtype=self.dtype, name="attention")
        out = attention(groups.reshape(batch * num_groups, length, channels), train=train, bias=bias)
        out = out.reshape(batch, num_groups, length, channels)
        if self.partition == "tokens":
            out = out.reshape(x.shape)
        elif self.partition == "block":
            out = blocking.block_unpartition(out, height, width)
        else:
            out = blocking.grid_unpartition(out, height, width)
        x = x + DropPath(self.drop_path_rate)(out, train=train)
        mlp = MlpBlock(self.mlp_ratio * channels, dropout_rate=self.dropout_rate, dtype=self.dtype,
                       approximate_gelu=True, name="mlp")
        y = mlp(layer_norm("norm_2", epsilon=1e-5, dtype=self.dtype)(x), train=train)
        return x + DropPath(self.drop_path_rate)(y, train=train)


class MaxViTBlock(nn.Module):
    """MBConv -> block attention -> grid attention on `[batch, height, width, channels]`.

    Attributes:
      width: output channels; stride: the MBConv's.
      window_size, grid_size: partition sides.
      on_tokens: the input is a 1 x N grid of learned tokens (both attentions over all of them).
      mbconv, attention: keyword arguments of MBConv / PartitionAttention shared by all blocks.
    """

    width: int
    stride: int
    window_size: int
    grid_size: int
    drop_path_rate: float
    mbconv: dict
    attention: dict
    on_tokens: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        x = constrain_batch(x)
        x = MBConv(self.width, self.stride, drop_path_rate=self.drop_path_rate, dtype=self.dtype, name="mbconv",
                   **self.mbconv)(x, train=train)
        for name, partition, size in (("block_attention", "block", self.window_size),
                                      ("grid_attention", "grid", self.grid_size)):
            x = PartitionAttention("tokens" if self.on_tokens else partition, size,
                                   drop_path_rate=self.drop_path_rate, dtype=self.dtype, name=name,
                                   **self.attention)(x, train=train)
        return x


class MaxViTStage(nn.Module):
    """`len(drop_path_rates)` MaxViT blocks, the first with stride 2; with a token-learner spec the blocks
    after the first run on learned tokens (layers/token_learner.py).

    Attributes:
      width: channels of the stage.
      drop_path_rates: one per block.
      block: MaxViTBlock keyword arguments shared by the blocks (partition sizes, mbconv, attention).
      token_learner: run the blocks after the first on learned tokens, or None.
      on_tokens: the input is already a 1 x N grid of learned tokens.
    """

    width: int
    drop_path_rates: Tuple[float, ...]
    block: dict
    token_learner: Optional[TokenLearnerSpec] = None
    on_tokens: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, h, w, c]` -> `[batch, h/2, w/2, width]`, or `[batch, 1, num_tokens, width]` when
        learned tokens replace the grid (rounded up on a token grid)."""
        blocks = [MaxViTBlock(self.width, 2 if j == 0 else 1, drop_path_rate=rate, name=f"block_{j}",
                              on_tokens=self.on_tokens or (self.token_learner is not None and j > 0), **self.block)
                  for j, rate in enumerate(self.drop_path_rates)]
        x = blocks[0](x, train=train)

        def run_blocks(grid):
            for block in blocks[1:]:
                grid = block(grid, train=train)
            return grid

        if self.token_learner is None:
            return run_blocks(x)
        return StageTokenLearner(self.token_learner, dtype=self.dtype, name="token_learner")(
            x, run_blocks, train=train)


class MaxViT(nn.Module):
    """MaxViT classifier.

    Attributes:
      num_classes: logits size; 0 returns the pre-logit features `[batch, dims[-1]]` instead.
      stem_widths, depths, dims: the architecture (VARIANTS).
      window_size, grid_size: partition sides; 0: the height of the last stage's map (input height / 32).
      drop_path_rate: stochastic depth of the last block; block k of K gets rate * k / (K - 1).
      token_learner: which stage runs on learned tokens, or None.
    """

    num_classes: int
    stem_widths: Tuple[int, int]
    depths: Tuple[int, ...]
    dims: Tuple[int, ...]
    window_size: int = 0
    grid_size: int = 0
    head_dim: int = 32
    mlp_ratio: int = 4
    expand_ratio: int = 4
    se_ratio: float = 0.25
    drop_path_rate: float = 0.0
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    bn_momentum: float = 0.99
    bn_epsilon: float = 1e-3
    token_learner: Optional[TokenLearnerSpec] = None
    dtype: jnp.dtype = jnp.float32

    def check_input(self, input_shape):
        """Raises ValueError naming the config field when images of `input_shape` do not fit the
        partitions, or the stage that learns tokens has fewer positions than `num_tokens`."""
        height, width = input_shape[:2]
        try:
            self.partition_sizes(height, width)
        except ValueError as e:
            raise ValueError(f"config.dataset.image_size={height}: {e}") from None
        if self.token_learner is not None:
            scale = 2 ** (self.token_learner.location + 2)  # stem / 2, then / 2 in every stage's first block
            positions = (height // scale) * (width // scale)
            if self.token_learner.num_tokens > positions:
                raise ValueError(f"config.model.token_learner.num_tokens={self.token_learner.num_tokens}: expected "
                                 f"at most the {positions} positions of stage {self.token_learner.location}")

    def partition_sizes(self, height: int, width: int) -> Tuple[int, int]:
        """(window, grid) for an input image of `height x width`; ValueError when the last stage's map
        is not a whole number of them."""
        scale = 2 ** (len(self.depths) + 1)
        last = (height // scale, width // scale)
        sizes = (self.window_size or last[0], self.grid_size or last[0])
        if min(sizes) < 1 or height % scale or width % scale or any(s % p for s in last for p in sizes):
            raise ValueError(f"MaxViT: an input of {height}x{width} needs height and width multiples of {scale} "
                             f"whose last-stage map {last} is a multiple of window_size={sizes[0]} and "
                             f"grid_size={sizes[1]} (config.model.window_size / grid_size; 0: the last "
                             f"stage's height)")
        return sizes

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images: float32 `[batch, height, width, channels]` -> logits `[batch, num_classes]`.

        The pre-logit features `[batch, dims[-1]]` (after the tanh) are sown into 'intermediates' as
        'pre_logits'."""
        window, grid = self.partition_sizes(images.shape[1], images.shape[2])
        bn = dict(bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon)
        block = dict(window_size=window, grid_size=grid, dtype=self.dtype,
                     mbconv=dict(expand_ratio=self.expand_ratio, se_ratio=self.se_ratio, **bn),
                     attention=dict(head_dim=self.head_dim, mlp_ratio=self.mlp_ratio, dropout_rate=self.dropout_rate,
                                    attention_dropout_rate=self.attention_dropout_rate))
        x = Stem(self.stem_widths, dtype=self.dtype, name="stem", **bn)(images.astype(self.dtype), train=train)
        total, first, on_tokens = sum(self.depths), 0, False
        for i, (depth, width) in enumerate(zip(self.depths, self.dims)):
            rates = tuple(self.drop_path_rate * (first + j) / max(total - 1, 1) for j in range(depth))
            first += depth
            tl = self.token_learner if self.token_learner is not None and self.token_learner.location == i else None
            x = MaxViTStage(width, rates, block, tl, on_tokens, dtype=self.dtype, name=f"stage_{i}")(x, train=train)
            on_tokens = on_tokens or (tl is not None and not tl.use_fuser)

        x = layer_norm("head_norm", epsilon=1e-5, dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))
        x = jnp.tanh(dense(self.dims[-1], ("embed", "mlp"), "pre_logits", self.dtype)(x)).astype(jnp.float32)
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, name="head", kernel_init=param_with_axes(_INIT, ("mlp", "classes")),
                        bias_init=param_with_axes(nn.initializers.zeros, ("classes",)))(x)


def default_config() -> dict:
    """Every field of `config.model` for MaxViT. `variant` ('T', 'S', 'B', 'L') sets stem_widths, depths,
    dims and drop_path_rate (1 - survival); non-empty stem_widths / depths / dims and a non-negative
    drop_path_rate override it. window_size and grid_size 0 follow the input: the last stage's map
    height (input / 32 with four stages: 7 at 224, 12 at 384, 16 at 512). bn_momentum is the weight of
    the old running statistics (TF / Flax convention; torch's momentum is 1 - it).
    `token_learner.location` is the 0-based stage that runs on learned tokens (-1: the last)."""
    return dict(
        variant="T", num_classes=1000, stem_widths=(), depths=(), dims=(), window_size=0, grid_size=0,
        head_dim=32, mlp_ratio=4, expand_ratio=4, se_ratio=0.25, drop_path_rate=-1.0, dropout_rate=0.0,
        attention_dropout_rate=0.0, bn_momentum=0.99, bn_epsilon=1e-3, dtype="float32",
        token_learner=token_learner_lib.default_config(location=-1))


def resolve_architecture(config) -> Tuple[Tuple[int, int], Tuple[int, ...], Tuple[int, ...]]:
    """(stem widths, depths, dims) of `config.model`: the variant's unless overridden (non-empty
    stem_widths / depths / dims). Raises ValueError naming the field."""
    check(config.variant in VARIANTS, "variant", config.variant, f"one of {sorted(VARIANTS)}")
    stem, depths, dims, _ = VARIANTS[config.variant]
    stem, depths, dims = tuple(config.stem_widths) or stem, tuple(config.depths) or depths, tuple(config.dims) or dims
    check(len(depths) == len(dims) and min(depths) >= 1 and min(dims) >= 1, "depths", depths,
          f"positive values, one per stage, as many as config.model.dims={dims}")
    check(len(stem) == 2 and min(stem) >= 1, "stem_widths", stem, "two positive widths")
    check(config.head_dim >= 1 and all(d % config.head_dim == 0 for d in dims), "head_dim", config.head_dim,
          f"a divisor of every stage width dims={dims}")
    return stem, depths, dims


@register("maxvit", default_config)
def build_maxvit(config) -> MaxViT:
    """Builds a MaxViT from `config.model` (`default_config`), raising ValueError naming a bad field."""
    stem, depths, dims = resolve_architecture(config)
    check_common(config)
    for field in ("window_size", "grid_size"):
        check(config[field] >= 0, field, config[field], ">= 0 (0: the height of the last stage's map)")
    check(0 < config.bn_momentum < 1, "bn_momentum", config.bn_momentum,
          "in (0, 1), the weight of the old running statistics (TF / Flax convention)")
    drop_path = config.drop_path_rate if config.drop_path_rate >= 0 else VARIANTS[config.variant][3]
    return MaxViT(
        num_classes=config.num_classes,
        stem_widths=stem,
        depths=depths,
        dims=dims,
        window_size=config.window_size,
        grid_size=config.grid_size,
        head_dim=config.head_dim,
        mlp_ratio=config.mlp_ratio,
        expand_ratio=config.expand_ratio,
        se_ratio=config.se_ratio,
        drop_path_rate=drop_path,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        bn_momentum=config.bn_momentum,
        bn_epsilon=config.bn_epsilon,
        token_learner=token_learner_lib.parse_spec(config.token_learner, num_locations=len(depths), what="stage"),
        dtype=jnp.dtype(config.dtype),
    )
