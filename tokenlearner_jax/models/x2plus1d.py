"""X(2+1)D with TokenLearner, a transformer over the learned tokens and TokenFuser: the TokenLearner
paper's network for Charades and AViD (arXiv 2106.11297, section "TokenLearner with Bottleneck
Transformer").

What the paper says (its video sections could not be read where this was written; this is from a
detailed review of the paper that quotes its section on this network, and from its abstract): an X3D
backbone (Feichtenhofer, CVPR 2020) whose channel-wise 3D convolutions are factorised into a 2D spatial
and a 1D temporal convolution ("X(2+1)D"), turned into a video Bottleneck Transformer (Srinivas et al.,
CVPR 2021): the 2D spatial convolution of the residual blocks is replaced by TokenLearner -> transformer
-> TokenFuser, followed by the block's 1D temporal convolution. TokenLearner's spatial attention is a 2D
convolution; the transformer is a "vector transformer" rather than multi-head self-attention. Clips of
64 frames, 224 x 224 in training and 256 x 256 in testing; TokenLearner runs on the 8 x 8 maps of each
of the 64 frames (stride 32 at 256) and learns 8 tokens per frame, so the transformer relates 64 x 8 =
512 tokens instead of 8 x 8 x 64 = 4,096 positions. Charades at 6 and 12 fps: 66.3 mAP.

Layout (`[batch, frames, height, width, channels]` throughout; no temporal downsampling):
- stem: conv 1x3x3 stride (1, 2, 2) (no bias) -> channel-wise conv 5x1x1 -> BN -> ReLU (X3D's stem);
- stages of residual blocks, the first block of each with spatial stride 2 (total stride 32 with four
  stages). A conv block is X3D's with its channel-wise 3x3x3 conv factorised:
    1x1x1 conv to `inner` = expansion x width -> BN -> ReLU -> channel-wise 1x3x3 conv (stride) ->
    channel-wise 3x1x1 conv -> BN -> squeeze-excite (every other block, from the first) -> swish ->
    1x1x1 conv to `width` -> BN (scale zero-initialised) -> + shortcut (1x1x1 conv stride + BN when the
    shape changes) -> ReLU;
  in a transformer stage every block replaces the 1x3x3 conv (and the squeeze-excite) with the
  space-time transformer unit below, then a 2x2 average pool where the block strides (as Bottleneck
  Transformers do after their attention: a stage's first block runs its unit on the previous stage's
  map, 14x14 at 224 input, the others on the stage's own, 7x7);
- head (X3D's): 1x1x1 conv to `head_width` -> BN -> ReLU -> mean over time and space -> Dense
  `fc_width` (no bias) -> ReLU -> dropout -> Dense `num_classes`.

Transformer stages (`config.model`):
- `token_learner` (the section every backbone shares, layers/token_learner.py; on by default): the blocks
  of stage `location` (0-based, -1 the last) run, per frame, TokenLearner on the h x w positions ->
  `num_tokens` tokens; `transformer_depth` encoder blocks (layers/transformer.EncoderBlock) over the
  T x num_tokens tokens of the whole clip; TokenFuser per frame back to the h x w positions, added to
  the unit's input (layers/token_learner.learned_tokens). TokenFuser's token-mixing Dense is
  zero-initialised, so the unit starts as the identity and the block as a (1x1x1, 3x1x1, 1x1x1) conv
  block. `use_fuser` must stay True: the unit sits inside a residual block and must give back every
  position.
- `attention_stages`: stages whose blocks run the encoder blocks over all T x h x w positions instead
  (a video Bottleneck Transformer without TokenLearner; the paper's 4,096-token comparison).
With `token_learner.enabled=False` and no `attention_stages` the network is the plain X(2+1)D.

Our choices where the paper is silent or could not be read: the transformer is the shared pre-norm
encoder block (multi-head attention + MLP, `mlp_ratio` 4), not a vector transformer; the configs of the
paper's model use TokenLearner v1.0 (sigmoid maps from 3x3 convolutions, the closest to "a 2D
convolution"; v1.1 is the layer's default); no position embedding on the tokens (order in time reaches
them through the temporal convolutions); no norm between the 1x3x3 and 3x1x1 convs; every block of the
last stage is a transformer block (as in Bottleneck Transformers); X3D-M's widths and depths.

BatchNorm statistics are the 'batch_stats' collection (updated in train mode with
`mutable=['batch_stats']`, frozen in eval mode).
"""

import dataclasses

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.layers.token_learner import TokenLearnerSpec
from tokenlearner_jax.layers.transformer import EncoderBlock
from tokenlearner_jax.models import flops
from tokenlearner_jax.models.registry import check, check_common, register


@dataclasses.dataclass(frozen=True)
class Variant:
    """Backbone sizes, and the transformer's heads for them."""

    stem_width: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    expansion: float  # inner width of a block = int(expansion * width)
    head_width: int
    fc_width: int
    num_heads: int


VARIANTS = {
    # X3D-M's widths and depths (X3D-S is X3D-M on shorter, smaller clips; X3D-L is deeper).
    "M": Variant(24, (24, 48, 96, 192), (3, 5, 11, 7), 2.25, 432, 2048, num_heads=8),
    "L": Variant(24, (24, 48, 96, 192), (5, 10, 25, 15), 2.25, 432, 2048, num_heads=8),
    # For the bundled 64x64 clips: three stages (total stride 16, a 4x4 map in the last stage).
    "tiny": Variant(8, (8, 16, 32), (1, 1, 2), 2.0, 64, 128, num_heads=4),
}
_CONV_INIT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def default_config() -> dict:
    """Every field of `config.model` for 'x2plus1d'; -1 and empty tuples take the variant's value. The
    default is the paper's Charades model: TokenLearner (8 tokens per frame) -> transformer -> TokenFuser
    in every block of the last stage."""
    return dict(
        name="x2plus1d",
        variant="M",
        num_classes=157,
        stem_width=-1, widths=(), depths=(), expansion=-1.0, head_width=-1, fc_width=-1,
        se_ratio=0.0625,
        attention_stages=(),  # stages (negative from the end) with attention over every position
        num_heads=-1,
        mlp_ratio=4.0,
        transformer_depth=1,
        dropout_rate=0.5,
        bn_momentum=0.9,  # weight of the old running statistics (torch's momentum 0.1)
        bn_epsilon=1e-5,
        head_bias_init=0.0,
        dtype="float32",
        token_learner=dict(token_learner_lib.default_config(location=-1), enabled=True, use_fuser=True),
    )


def pointwise(features: int, name: str, dtype, axes: tuple[str | None, str | None] = ("embed", "mlp")):
    """A 1x1x1 convolution without bias, i.e. a Dense on the channels (He fan-out initialisation)."""
    return nn.Dense(features, use_bias=False, dtype=dtype, name=name, kernel_init=param_with_axes(_CONV_INIT, axes))


class ChannelwiseConv(nn.Module):
    """Channel-wise (depthwise) 3D convolution without bias, zero padding k // 2 on each side and a spatial
    stride: out[t, y, x, c] = sum over the kernel's (i, j, k) of in[t + i, s y + j, s x + k, c] *
    kernel[i, j, k, c] (the input padded), computed as a sum of shifted copies of the input. On XLA's CPU
    backend this is several times faster than a grouped convolution (and its gradient); tests check it
    equals one.

    Attributes:
      kernel_size: (time, height, width), odd sizes.
      stride: spatial stride.
      channel_axis: logical name of the channels.
    """

    kernel_size: tuple[int, int, int]
    stride: int = 1
    channel_axis: str | None = "mlp"
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: `[batch, T, H, W, channels]` -> `[batch, T, ceil(H / stride), ceil(W / stride), channels]`."""
        kt, kh, kw = self.kernel_size
        init = nn.initializers.variance_scaling(2.0, "fan_out", "normal", in_axis=(), out_axis=(0, 1, 2, 3))
        kernel = self.param("kernel", param_with_axes(init, ("patch_t", "patch_h", "patch_w", self.channel_axis)),
                            (kt, kh, kw, x.shape[-1])).astype(self.dtype)
        _, frames, height, width, _ = x.shape
        s = self.stride
        out_h, out_w = -(-height // s), -(-width // s)
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (kt // 2, kt // 2), (kh // 2, kh // 2), (kw // 2, kw // 2),
                                                (0, 0)))
        out = 0
        for i in range(kt):
            for j in range(kh):
                for k in range(kw):
                    out = out + padded[:, i:i + frames, j:j + s * (out_h - 1) + 1:s, k:k + s * (out_w - 1) + 1:s] \
                        * kernel[i, j, k]
        return out


def batch_norm(name: str, train: bool, channel_axis: str | None, momentum: float, epsilon: float, dtype, *,
               zero_scale: bool = False):
    """BatchNorm over batch, time and space (statistics in 'batch_stats'); `zero_scale` starts its output
    at zero (the last norm of a residual branch, so that the block starts as its shortcut)."""
    scale_init = nn.initializers.zeros if zero_scale else nn.initializers.ones
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=epsilon, dtype=dtype, name=name,
                        scale_init=param_with_axes(scale_init, (channel_axis,)),
                        bias_init=param_with_axes(nn.initializers.zeros, (channel_axis,)))


def round_width(width: float, divisor: int = 8) -> int:
    """`width` rounded to a multiple of `divisor` (at least `divisor`, never below 90% of `width`), as X3D
    sizes its squeeze-excite."""
    rounded = max(divisor, int(width + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * width else rounded


class SqueezeExcite(nn.Module):
    """x * sigmoid(Dense(ReLU(Dense(mean over time and space of x)))); `hidden` the bottleneck width."""

    hidden: int
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        """x: `[batch, T, h, w, channels]` -> the same shape."""
        squeezed = jnp.mean(x, axis=(1, 2, 3), keepdims=True)
        squeezed = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="reduce",
                                    kernel_init=param_with_axes(_CONV_INIT, ("mlp", None)),
                                    bias_init=param_with_axes(nn.initializers.zeros, (None,)))(squeezed))
        gate = nn.Dense(x.shape[-1], dtype=self.dtype, name="expand",
                        kernel_init=param_with_axes(_CONV_INIT, (None, "mlp")),
                        bias_init=param_with_axes(nn.initializers.zeros, ("mlp",)))(squeezed)
        return x * nn.sigmoid(gate)


class SpaceTimeTransformer(nn.Module):
    """TokenLearner per frame -> encoder blocks over the clip's tokens -> TokenFuser per frame -> + input;
    without a TokenLearner spec, encoder blocks over every position of the clip (module docstring).

    Attributes:
      num_heads, mlp_dim, depth: the encoder blocks.
      token_learner: the parsed `config.model.token_learner` (with the fuser), or None for attention over
        all positions.
    """

    num_heads: int
    mlp_dim: int
    depth: int = 1
    token_learner: TokenLearnerSpec | None = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, T, h, w, channels]` -> the same shape. The learned tokens' attention maps are sown
        by TokenLearner as 'token_attention' `[batch * T, num_tokens, h * w]`."""
        batch, frames, height, width, channels = x.shape

        def encode(tokens):
            for i in range(self.depth):
                tokens = EncoderBlock(self.num_heads, self.mlp_dim, dtype=self.dtype,
                                      name=f"encoderblock_{i}")(tokens, train=train)
            return tokens

        if self.token_learner is None:
            return encode(x.reshape(batch, frames * height * width, channels)).reshape(x.shape)

        def run(tokens):  # [batch * T, num_tokens, channels]: one sequence per clip
            return encode(tokens.reshape(batch, -1, channels)).reshape(tokens.shape)

        per_frame = x.reshape(batch * frames, height, width, channels)
        out = token_learner_lib.learned_tokens(self.token_learner, per_frame, run, train=train, dtype=self.dtype)
        return out.reshape(x.shape)


class Block(nn.Module):
    """A residual block of X(2+1)D (module docstring): the spatial mixing is a channel-wise 1x3x3 conv
    (with squeeze-excite when `se_width` > 0), or a SpaceTimeTransformer when `transformer` is given.

    Attributes:
      width, inner: output and bottleneck channels.
      stride: spatial stride (2 in a stage's first block).
      se_width: squeeze-excite bottleneck width, 0 for none.
      transformer: keyword arguments of SpaceTimeTransformer, or None for the conv block.
    """

    width: int
    inner: int
    stride: int = 1
    se_width: int = 0
    transformer: dict | None = None
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, T, h, w, c]` -> `[batch, T, h / stride, w / stride, width]`."""
        def norm(name, axis, zero_scale=False):
            return batch_norm(name, train, axis, self.bn_momentum, self.bn_epsilon, self.dtype, zero_scale=zero_scale)

        x = constrain_batch(x)
        shortcut = x
        if self.stride > 1 or x.shape[-1] != self.width:
            strided = x[:, :, ::self.stride, ::self.stride]  # a 1x1x1 conv with stride
            shortcut = norm("shortcut_norm", "embed")(pointwise(self.width, "shortcut", self.dtype,
                                                                ("conv_in", "embed"))(strided))

        y = nn.relu(norm("expand_norm", "mlp")(pointwise(self.inner, "expand", self.dtype)(x)))
        if self.transformer is None:
            y = ChannelwiseConv((1, 3, 3), self.stride, dtype=self.dtype, name="spatial")(y)
        else:
            y = SpaceTimeTransformer(dtype=self.dtype, name="transformer", **self.transformer)(y, train=train)
            if self.stride > 1:
                y = nn.avg_pool(y, (1, self.stride, self.stride), strides=(1, self.stride, self.stride))
        y = ChannelwiseConv((3, 1, 1), dtype=self.dtype, name="temporal")(y)
        y = norm("temporal_norm", "mlp")(y)
        if self.se_width and self.transformer is None:
            y = SqueezeExcite(self.se_width, dtype=self.dtype, name="squeeze_excite")(y)
        y = nn.swish(y)
        y = pointwise(self.width, "project", self.dtype, ("mlp", "embed"))(y)
        y = norm("project_norm", "embed", zero_scale=True)(y)
        return nn.relu(shortcut + y)


class X2Plus1D(nn.Module):
    """X(2+1)D video classifier with optional space-time transformer stages (module docstring).

    Attributes:
      num_classes: logits size; 0 returns the pre-logit features `[batch, fc_width]` instead.
      stem_width, widths, depths, expansion, head_width, fc_width: the backbone (VARIANTS).
      se_ratio: squeeze-excite width = round_width(se_ratio * inner), every other conv block.
      attention_stages: non-negative indices of the stages whose blocks attend over every position.
      token_learner: the parsed `config.model.token_learner`: the blocks of stage `location` run on
        learned tokens; or None.
      num_heads, mlp_ratio, transformer_depth: the encoder blocks of each transformer unit.
      dropout_rate: before the classifier.
      head_bias_init: initial classifier bias (e.g. -log(num_classes) for a sigmoid loss).
    """

    num_classes: int
    stem_width: int
    widths: tuple[int, ...]
    depths: tuple[int, ...]
    expansion: float
    head_width: int
    fc_width: int
    se_ratio: float = 0.0625
    attention_stages: tuple[int, ...] = ()
    token_learner: TokenLearnerSpec | None = None
    num_heads: int = 8
    mlp_ratio: float = 4
    transformer_depth: int = 1
    dropout_rate: float = 0.5
    bn_momentum: float = 0.9
    bn_epsilon: float = 1e-5
    head_bias_init: float = 0.0
    dtype: jnp.dtype = jnp.float32

    def transformer_stages(self) -> dict[int, TokenLearnerSpec | None]:
        """{stage: its TokenLearner spec, or None for attention over every position} of the stages whose
        blocks run the space-time transformer unit."""
        stages = {stage: None for stage in self.attention_stages}
        if self.token_learner is not None:
            stages[self.token_learner.location] = self.token_learner
        return stages

    def stage_maps(self, height: int, width: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        """[(the map a stage's first block reads, the stage's own map)] per stage, (height, width) each,
        for frames of height x width: the stem and every stage's first block halve the sides (rounding
        up)."""
        maps, side = [], (-(-height // 2), -(-width // 2))
        for _ in self.widths:
            out = (-(-side[0] // 2), -(-side[1] // 2))
            maps.append((side, out))
            side = out
        return maps

    def check_input(self, input_shape):
        """Raises ValueError naming the config field when clips of `input_shape` (frames, height, width,
        channels) do not fit: images instead of clips, a transformer stage whose first block reads a map
        of odd side (its 2x2 average pooling would not match the strided shortcut), or more learned tokens
        than the positions per frame of the TokenLearner stage."""
        if len(input_shape) != 4:
            raise ValueError("config.dataset.num_frames=0: expected > 0 (x2plus1d takes clips [frames, height, "
                             "width, 3])")
        _, height, width, _ = input_shape
        maps = self.stage_maps(height, width)
        for stage, spec in sorted(self.transformer_stages().items()):
            (in_h, in_w), (out_h, out_w) = maps[stage]
            if in_h % 2 or in_w % 2:
                raise ValueError(f"config.dataset.image_size={width}: expected a size whose map has even sides at "
                                 f"transformer stage {stage} (a multiple of {2 ** (stage + 2)}): its first block reads "
                                 f"a {in_h}x{in_w} map and halves it by 2x2 average pooling")
            if spec is not None and spec.num_tokens > out_h * out_w:
                raise ValueError(f"config.model.token_learner.num_tokens={spec.num_tokens}: expected at most the "
                                 f"{out_h * out_w} positions per frame of stage {stage} ({out_h}x{out_w} at "
                                 f"config.dataset.image_size={width})")

    @nn.compact
    def __call__(self, videos, *, train: bool = False):
        """videos: float32 `[batch, frames, height, width, 3]` -> logits `[batch, num_classes]`; the
        pre-logit features `[batch, fc_width]` are sown into 'intermediates' as 'pre_logits'."""
        def norm(name):
            return batch_norm(name, train, "embed", self.bn_momentum, self.bn_epsilon, self.dtype)

        batch, frames = videos.shape[:2]
        stem = nn.Conv(self.stem_width, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                       dtype=self.dtype, name="stem_spatial",
                       kernel_init=param_with_axes(_CONV_INIT, ("patch_h", "patch_w", "conv_in", "embed")))
        x = stem(videos.reshape(batch * frames, *videos.shape[2:]).astype(self.dtype))  # per frame: a 1x3x3 conv
        x = x.reshape(batch, frames, *x.shape[1:])
        x = ChannelwiseConv((5, 1, 1), channel_axis="embed", dtype=self.dtype, name="stem_temporal")(x)
        x = nn.relu(norm("stem_norm")(x))
        transformer_stages = self.transformer_stages()
        for stage, (width, depth) in enumerate(zip(self.widths, self.depths)):
            inner = int(self.expansion * width)
            transformer = None
            if stage in transformer_stages:
                transformer = dict(num_heads=self.num_heads, mlp_dim=int(self.mlp_ratio * inner),
                                   depth=self.transformer_depth, token_learner=transformer_stages[stage])
            for i in range(depth):
                x = Block(width, inner, stride=2 if i == 0 else 1,
                          se_width=round_width(self.se_ratio * inner) if self.se_ratio and i % 2 == 0 else 0,
                          transformer=transformer, bn_momentum=self.bn_momentum, bn_epsilon=self.bn_epsilon,
                          dtype=self.dtype, name=f"stage{stage}_block{i}")(x, train=train)
        x = pointwise(self.head_width, "head_conv", self.dtype)(x)
        x = nn.relu(batch_norm("head_norm", train, "mlp", self.bn_momentum, self.bn_epsilon, self.dtype)(x))
        x = jnp.mean(x, axis=(1, 2, 3))
        x = nn.relu(nn.Dense(self.fc_width, use_bias=False, dtype=self.dtype, name="fc",
                             kernel_init=param_with_axes(nn.initializers.lecun_normal(), ("mlp", "embed")))(x))
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train).astype(jnp.float32)
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, name="head",
                        kernel_init=param_with_axes(nn.initializers.normal(0.01), ("embed", "classes")),
                        bias_init=param_with_axes(nn.initializers.constant(self.head_bias_init), ("classes",)))(x)


def _or_variant(value, default):
    return default if value in (None, -1, -1.0, ()) else value


@register("x2plus1d", default_config)
def build(config) -> X2Plus1D:
    """Builds X2Plus1D from `config.model` (fields: default_config()), the variant's values where a field is
    -1 or empty; ValueError naming the field."""
    check(config.variant in VARIANTS, "variant", config.variant, f"one of {sorted(VARIANTS)}")
    check_common(config)
    variant = VARIANTS[config.variant]
    widths = tuple(_or_variant(tuple(config.widths), variant.widths))
    depths = tuple(_or_variant(tuple(config.depths), variant.depths))
    if len(widths) != len(depths) or not all(n > 0 for n in widths + depths):
        raise ValueError(f"config.model.widths={widths} and config.model.depths={depths}: expected positive values, "
                         f"one of each per stage")
    spec = token_learner_lib.parse_spec(config.token_learner, num_locations=len(depths), what="stage")
    check(spec is None or spec.use_fuser, "token_learner.use_fuser", config.token_learner.use_fuser,
          "True for x2plus1d (the learned tokens stand in for a convolution inside residual blocks, so TokenFuser "
          "must map them back to every position)")
    attention_stages = []
    for stage in config.attention_stages:
        check(-len(depths) <= stage < len(depths), "attention_stages", tuple(config.attention_stages),
              f"stage indices among the {len(depths)} stages (negative from the end)")
        stage %= len(depths)
        check(spec is None or stage != spec.location, "attention_stages", tuple(config.attention_stages),
              f"stages other than config.model.token_learner.location={config.token_learner.location} (stage "
              f"{stage} cannot both attend over every position and learn tokens)")
        attention_stages.append(stage)
    expansion = _or_variant(config.expansion, variant.expansion)
    num_heads = _or_variant(config.num_heads, variant.num_heads)
    stages = set(attention_stages) | ({spec.location} if spec else set())
    for stage in sorted(stages):
        inner = int(expansion * widths[stage])
        check(inner % num_heads == 0, "num_heads", num_heads,
              f"a divisor of the inner width {inner} of transformer stage {stage}")
    check(config.num_classes >= 0, "num_classes", config.num_classes, ">= 0 (0: the pre-logit features)")
    check(config.transformer_depth >= 1 or not stages, "transformer_depth", config.transformer_depth, ">= 1")
    check(config.mlp_ratio > 0, "mlp_ratio", config.mlp_ratio, "> 0")
    return X2Plus1D(
        num_classes=config.num_classes,
        stem_width=_or_variant(config.stem_width, variant.stem_width),
        widths=widths, depths=depths, expansion=expansion,
        head_width=_or_variant(config.head_width, variant.head_width),
        fc_width=_or_variant(config.fc_width, variant.fc_width),
        se_ratio=config.se_ratio,
        attention_stages=tuple(sorted(set(attention_stages))),
        token_learner=spec,
        num_heads=num_heads,
        mlp_ratio=config.mlp_ratio,
        transformer_depth=config.transformer_depth,
        dropout_rate=config.dropout_rate,
        bn_momentum=config.bn_momentum,
        bn_epsilon=config.bn_epsilon,
        head_bias_init=config.head_bias_init,
        dtype=jnp.dtype(config.dtype),
    )


def channelwise_convs(model: nn.Module, input_shape) -> dict:
    """{module path: (output elements, kernel taps)} of the model's channel-wise convolutions on one input
    of `input_shape` (frames, height, width, channels), from abstract shapes."""
    abstract = flops.abstract_variables(model, input_shape)
    videos = jax.ShapeDtypeStruct((1,) + tuple(input_shape), jnp.float32)

    def outputs(variables, x):
        _, state = model.apply(variables, x, train=False, mutable=["intermediates"],
                               capture_intermediates=lambda module, method: isinstance(module, ChannelwiseConv))
        return state["intermediates"]

    captured = flax.traverse_util.flatten_dict(jax.eval_shape(outputs, abstract, videos))
    kernels = flax.traverse_util.flatten_dict(abstract["params"])
    return {path[:-1]: (int(np.prod(out.shape)), int(np.prod(kernels[path[:-1] + ("kernel",)].shape[:3])))
            for path, (out,) in captured.items() if path[-1] == "__call__"}  # sown values are tuples


def channelwise_macs(model: nn.Module, input_shape) -> int:
    """Multiply-accumulates of the model's channel-wise convolutions on one input (output elements x
    kernel taps). `flops.matmul_macs` does not see them (they are sums of shifted copies, not
    convolutions): add the two for the model's MACs."""
    return sum(elements * taps for elements, taps in channelwise_convs(model, input_shape).values())
