"""PoolFormer and its MetaFormer relatives (arXiv 2111.11418): a token mixer chosen per stage, and
optionally TokenLearner in one stage.

Layout (as the official code and timm's port):
- stem: conv 7x7, stride 4, padding 2, no norm; stage i > 0 starts with a conv 3x3, stride 2,
  padding 1, no norm;
- block: x = x + DropPath(scale_1 * mixer(GroupNorm(x))); x = x + DropPath(scale_2 * MLP(GroupNorm(x)))
  with GroupNorm of one group (eps 1e-5), a 1x1-conv MLP (= Dense on channels) of ratio 4 with exact
  GELU, per-channel layer scales and stochastic depth rising linearly over all blocks to its maximum;
- head ('head_norm'): 'group_norm' = GroupNorm over the final grid -> global average pool -> Dense (the
  paper's code); 'pooled_layer_norm' = global average pool -> LayerNorm (eps 1e-6) -> Dense (timm's
  MetaFormer port, under which timm's published poolformer_* weights run; same parameters).
Mixers: layers/mixers.py; TokenLearner in a stage: layers/token_learner.py.
"""

from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.token_learner import StageTokenLearner, TokenLearnerSpec
from tokenlearner_jax.layers.attention import DropPath, MlpBlock, layer_norm
from tokenlearner_jax.layers.mixers import MIXERS, make_mixer
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.models.registry import check, check_common, register

# name -> (depths, dims, layer-scale init, drop path rate); the PoolFormer paper (arXiv 2111.11418) and timm
VARIANTS = {
    "S12": ((2, 2, 6, 2), (64, 128, 320, 512), 1e-5, 0.1),
    "S24": ((4, 4, 12, 4), (64, 128, 320, 512), 1e-5, 0.1),
    "S36": ((6, 6, 18, 6), (64, 128, 320, 512), 1e-6, 0.2),
    "M36": ((6, 6, 18, 6), (96, 192, 384, 768), 1e-6, 0.3),
    "M48": ((8, 8, 24, 8), (96, 192, 384, 768), 1e-6, 0.4),
}
HEAD_NORMS = ("group_norm", "pooled_layer_norm")
_INIT = nn.initializers.truncated_normal(0.02)  # timm's init of every conv and Dense kernel


def group_norm(name: str, dtype) -> nn.GroupNorm:
    """GroupNorm with one group: normalises each example over height, width and channels together."""
    return nn.GroupNorm(num_groups=1, epsilon=1e-5, dtype=dtype, name=name,
                        scale_init=param_with_axes(nn.initializers.ones, ("embed",)),
                        bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))


def conv(features: int, kernel: int, stride: int, padding: int, name: str, dtype) -> nn.Conv:
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=((padding, padding),) * 2,
                   dtype=dtype, name=name,
                   kernel_init=param_with_axes(_INIT, ("patch_h", "patch_w", "conv_in", "embed")),
                   bias_init=param_with_axes(nn.initializers.zeros, ("embed",)))


class MetaFormerBlock(nn.Module):
    """One MetaFormer block on a grid `[batch, height, width, channels]`.

    Attributes:
      mixer: token mixer name (layers/mixers.py).
      layer_scale_init: initial value of both per-channel layer scales.
      drop_path_rate: stochastic-depth rate of both branches.
      pool_size, head_dim, kernel_size: settings of the pooling, attention and depthwise-conv mixers.
    """

    mixer: str
    layer_scale_init: float
    drop_path_rate: float = 0.0
    mlp_ratio: int = 4
    pool_size: int = 3
    head_dim: int = 32
    kernel_size: int = 3
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height, width, channels]`."""
        x = constrain_batch(x)
        channels = x.shape[-1]

        def layer_scale(name):
            return self.param(name, param_with_axes(nn.initializers.constant(self.layer_scale_init), ("embed",)),
                              (channels,)).astype(self.dtype)

        y = make_mixer(self.mixer, pool_size=self.pool_size, head_dim=self.head_dim, kernel_size=self.kernel_size,
                       dtype=self.dtype, name="token_mixer")(group_norm("norm_1", self.dtype)(x), train=train)
        x = x + DropPath(self.drop_path_rate)(layer_scale("layer_scale_1") * y, train=train)
        mlp = MlpBlock(self.mlp_ratio * channels, dtype=self.dtype, kernel_init=_INIT,
                       bias_init=nn.initializers.zeros, name="mlp")
        y = mlp(group_norm("norm_2", self.dtype)(x), train=train)
        return x + DropPath(self.drop_path_rate)(layer_scale("layer_scale_2") * y, train=train)


class MetaFormerStage(nn.Module):
    """Optional stride-2 downsampling conv, then `len(drop_path_rates)` blocks with one mixer; with a
    token-learner spec the blocks run on learned tokens (layers/token_learner.py).

    Attributes:
      width: channels of the stage.
      downsample: start with the 3x3 stride-2 conv (every stage but the first).
      drop_path_rates: one per block.
      block: settings shared by the blocks (mixer, layer scale, ...), as MetaFormerBlock keyword arguments.
      token_learner: run the blocks on learned tokens, or None.
    """

    width: int
    downsample: bool
    drop_path_rates: Tuple[float, ...]
    block: dict
    token_learner: Optional[TokenLearnerSpec] = None
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` -> `[batch, height', width', width]` (halved by the
        downsampling conv; a 1 x num_tokens grid when learned tokens replace the grid)."""
        if self.downsample:
            x = conv(self.width, 3, 2, 1, "downsample", self.dtype)(x)
        blocks = [MetaFormerBlock(drop_path_rate=rate, dtype=self.dtype, name=f"block_{i}", **self.block)
                  for i, rate in enumerate(self.drop_path_rates)]

        def run_blocks(grid):
            for block in blocks:
                grid = block(grid, train=train)
            return grid

        if self.token_learner is None:
            return run_blocks(x)
        return StageTokenLearner(self.token_learner, dtype=self.dtype, name="token_learner")(
            x, run_blocks, train=train)


class PoolFormer(nn.Module):
    """MetaFormer classifier (PoolFormer with the default pooling mixers).

    Attributes:
      num_classes: logits size; 0 returns the pre-logit features `[batch, dims[-1]]` instead.
      depths, dims: blocks and channels per stage.
      mixers: token mixer per stage (layers/mixers.py).
      layer_scale_init: initial value of every layer scale.
      drop_path_rate: stochastic depth of the last block; block k of K gets rate * k / (K - 1).
      head_norm: 'group_norm' or 'pooled_layer_norm' (module docstring).
      token_learner: which stage runs on learned tokens, or None.
    """

    num_classes: int
    depths: Tuple[int, ...]
    dims: Tuple[int, ...]
    mixers: Tuple[str, ...]
    layer_scale_init: float
    drop_path_rate: float = 0.0
    mlp_ratio: int = 4
    pool_size: int = 3
    attention_head_dim: int = 32
    conv_kernel_size: int = 3
    head_norm: str = "group_norm"
    token_learner: Optional[TokenLearnerSpec] = None
    dtype: jnp.dtype = jnp.float32

    def check_input(self, input_shape):
        """Raises ValueError naming the config field when the stage that learns tokens has fewer
        positions than `token_learner.num_tokens` for images of `input_shape`."""
        if self.token_learner is None:
            return
        height, width = (n // 4 + (n % 4 > 0) for n in input_shape[:2])  # 7x7 / 4 stem, padding 2
        for _ in range(self.token_learner.location):
            height, width = (height + 1) // 2, (width + 1) // 2  # 3x3 / 2 downsampling, padding 1
        if self.token_learner.num_tokens > height * width:
            raise ValueError(f"config.model.token_learner.num_tokens={self.token_learner.num_tokens}: expected at "
                             f"most the {height * width} positions of stage {self.token_learner.location}")

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images: float32 `[batch, height, width, channels]` -> logits `[batch, num_classes]`.

        The pre-logit features `[batch, dims[-1]]` are sown into 'intermediates' as 'pre_logits'."""
        x = conv(self.dims[0], 7, 4, 2, "stem", self.dtype)(images.astype(self.dtype))
        total, first = sum(self.depths), 0
        for i, (depth, width, mixer) in enumerate(zip(self.depths, self.dims, self.mixers)):
            rates = tuple(self.drop_path_rate * (first + j) / max(total - 1, 1) for j in range(depth))
            first += depth
            block = dict(mixer=mixer, layer_scale_init=self.layer_scale_init, mlp_ratio=self.mlp_ratio,
                         pool_size=self.pool_size, head_dim=self.attention_head_dim,
                         kernel_size=self.conv_kernel_size)
            tl = self.token_learner if self.token_learner is not None and self.token_learner.location == i else None
            stage = MetaFormerStage(width, i > 0, rates, block, tl, dtype=self.dtype, name=f"stage_{i}")
            x = stage(x, train=train)

        if self.head_norm == "group_norm":
            x = jnp.mean(group_norm("head_norm", self.dtype)(x), axis=(1, 2))
        else:
            x = layer_norm("head_norm", dtype=self.dtype)(jnp.mean(x, axis=(1, 2)))
        x = x.astype(jnp.float32)
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, name="head", kernel_init=param_with_axes(_INIT, ("embed", "classes")),
                        bias_init=param_with_axes(nn.initializers.zeros, ("classes",)))(x)


def default_config() -> dict:
    """Every field of `config.model` for a PoolFormer / MetaFormer. `variant` ('S12', 'S24', 'S36', 'M36',
    'M48') sets depths, dims, layer_scale_init and drop_path_rate; non-empty depths / dims, a
    positive layer_scale_init and a non-negative drop_path_rate override it. `mixers` holds one token mixer for all
    stages or one per stage ('pooling', 'identity', 'attention', 'depthwise_conv', 'spatial_mlp');
    `token_learner.location` is the 0-based stage that runs on learned tokens (-1: the last)."""
    return dict(
        variant="S12", num_classes=1000, depths=(), dims=(), mixers=("pooling",), layer_scale_init=-1.0,
        drop_path_rate=-1.0, mlp_ratio=4, pool_size=3, attention_head_dim=32, conv_kernel_size=3,
        head_norm="group_norm",  # or 'pooled_layer_norm': timm's head, which its poolformer_* weights need
        dtype="float32", token_learner=token_learner_lib.default_config(location=-1))


def resolve_architecture(config) -> Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[str, ...], float]:
    """(depths, dims, mixers per stage, layer-scale init) that `config.model` resolves to."""
    model = build_poolformer(config)
    return model.depths, model.dims, model.mixers, model.layer_scale_init


@register("poolformer", default_config)
def build_poolformer(config) -> PoolFormer:
    """Builds a PoolFormer / MetaFormer from `config.model` (`default_config`), with the variant's
    architecture, layer scale and drop path unless overridden; raises ValueError naming a bad field."""
    check(config.variant in VARIANTS, "variant", config.variant, f"one of {sorted(VARIANTS)}")
    depths, dims, layer_scale, drop_path = VARIANTS[config.variant]
    depths, dims = tuple(config.depths) or depths, tuple(config.dims) or dims
    check(len(depths) == len(dims) and min(depths) >= 1 and min(dims) >= 1, "depths", depths,
          f"positive values, one per stage, as many as config.model.dims={dims}")
    mixers = tuple(config.mixers)
    if len(mixers) == 1:
        mixers *= len(depths)
    check(len(mixers) == len(depths) and all(m in MIXERS for m in mixers), "mixers", tuple(config.mixers),
          f"one name for all stages or one per stage ({len(depths)}), each one of {MIXERS}")
    check_common(config)
    check(config.head_norm in HEAD_NORMS, "head_norm", config.head_norm, f"one of {HEAD_NORMS}")
    if "attention" in mixers:
        check(all(d % config.attention_head_dim == 0 for d, m in zip(dims, mixers) if m == "attention"),
              "attention_head_dim", config.attention_head_dim, f"a divisor of the attention stages' widths {dims}")
    return PoolFormer(
        num_classes=config.num_classes,
        depths=depths,
        dims=dims,
        mixers=mixers,
        layer_scale_init=config.layer_scale_init if config.layer_scale_init > 0 else layer_scale,
        drop_path_rate=config.drop_path_rate if config.drop_path_rate >= 0 else drop_path,
        mlp_ratio=config.mlp_ratio,
        pool_size=config.pool_size,
        attention_head_dim=config.attention_head_dim,
        conv_kernel_size=config.conv_kernel_size,
        head_norm=config.head_norm,
        token_learner=token_learner_lib.parse_spec(config.token_learner, num_locations=len(depths), what="stage"),
        dtype=jnp.dtype(config.dtype),
    )
