"""Vision Transformer (arXiv 2010.11929), optionally with TokenLearner / TokenFuser (arXiv 2106.11297).

Without TokenLearner this is the standard pre-norm ViT. With it, the config picks where it goes:
- `use_fuser=False`: TokenLearner runs once before encoder layer L; every later layer sees only
  `num_tokens` tokens (plus the class token, which is kept aside and carried along).
- `use_fuser=True`: every layer from L on runs TokenLearner -> block -> TokenFuser -> + residual,
  keeping all positions.
"""

import dataclasses
import re
from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import AddPositionEmbedding, EncoderBlock, PatchEmbedding, TokenFuser, make_token_learner
from tokenlearner_jax.layers.attention import layer_norm
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.models.registry import register

# name -> (width, depth, heads, mlp_dim)
VARIANTS = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}


@dataclasses.dataclass(frozen=True)
class TokenLearnerSpec:
    """Where and how TokenLearner runs inside the encoder."""

    layer: int  # runs before encoder layer `layer` (0-based)
    num_tokens: int = 8
    version: str = "v1.1"
    use_fuser: bool = False
    bottleneck_dim: int = 64


def parse_variant(variant: str) -> Tuple[str, int]:
    """'B/16' -> ('B', 16)."""
    match = re.fullmatch(r"(Ti|S|B|L|H)/(\d+)", variant or "")
    if not match:
        raise ValueError(f"config.model.variant={variant!r}: expected '<size>/<patch>' with size in "
                         f"{sorted(VARIANTS)}, e.g. 'B/16'")
    return match.group(1), int(match.group(2))


def token_learner_layer(location: float, depth: int) -> int:
    """Encoder layer index for a location given as a fraction of the depth (0 <= location < 1, e.g.
    0.5 -> depth/2) or as a layer index (an integer >= 1)."""
    if 0 <= location < 1:
        return int(round(location * depth))
    if location >= 1 and float(location).is_integer() and location < depth:
        return int(location)
    raise ValueError(f"config.model.token_learner.location={location}: expected a fraction in [0, 1) or an "
                     f"integer layer index in [1, {depth - 1}] (depth {depth})")


def _fold(x, groups: int):
    """`[batch, groups * n, width]` -> `[batch * groups, n, width]` (group-major token order)."""
    return x.reshape(x.shape[0] * groups, -1, x.shape[-1])


def _unfold(x, groups: int):
    """`[batch * groups, n, width]` -> `[batch, groups * n, width]`."""
    return x.reshape(x.shape[0] // groups, -1, x.shape[-1])


class ViT(nn.Module):
    """Vision Transformer classifier.

    Attributes:
      num_classes: logits size; 0 returns the pre-logit features instead.
      patch_size, width, depth, num_heads, mlp_dim: the architecture.
      classifier: 'token' (class token) or 'gap' (mean over tokens).
      representation_size: if set, a Dense + tanh pre-logits layer of that size.
      token_learner: where TokenLearner runs, or None.
      head_bias_init: initial value of the head bias (-10 for the sigmoid JFT recipe).
    """

    num_classes: int
    patch_size: Tuple[int, int]
    width: int
    depth: int
    num_heads: int
    mlp_dim: int
    classifier: str = "token"
    representation_size: Optional[int] = None
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    token_learner: Optional[TokenLearnerSpec] = None
    head_bias_init: float = 0.0
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, images, *, train: bool = False):
        """images: float32 `[batch, height, width, channels]` -> logits `[batch, num_classes]`.

        The pre-logit features `[batch, width or representation_size]` are sown into the
        'intermediates' collection as 'pre_logits'."""
        x = PatchEmbedding(self.width, self.patch_size, dtype=self.dtype, name="stem")(images.astype(self.dtype))
        batch, grid_h, grid_w, _ = x.shape
        x = constrain_batch(x.reshape(batch, grid_h * grid_w, self.width))
        x, num_prefix = self._prepend_class_token(x, "cls")
        x = AddPositionEmbedding(name="posembed_input")(x)
        x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
        x = self._encode(x, num_prefix, (grid_h, grid_w), 1, train)
        return self._classify(self._pool(x))

    def _prepend_class_token(self, x, name):
        """`[b, n, width]` -> (`[b, 1 + n, width]` with the class token first, 1), or (x, 0) for 'gap'."""
        if self.classifier != "token":
            return x, 0
        cls = self.param(name, param_with_axes(nn.initializers.zeros, (None, None, "embed")), (1, 1, self.width))
        return jnp.concatenate([jnp.tile(cls.astype(x.dtype), (x.shape[0], 1, 1)), x], axis=1), 1

    def _pool(self, x):
        """`[b, n, width]` -> `[b, width]`: the class token, or the mean over tokens."""
        return x[:, 0] if self.classifier == "token" else jnp.mean(x, axis=1)

    def _block(self, i, depth, name):
        return EncoderBlock(self.num_heads, self.mlp_dim, self.dropout_rate, self.attention_dropout_rate,
                            drop_path_rate=self.drop_path_rate * i / max(depth - 1, 1), dtype=self.dtype, name=name)

    def _encode(self, x, num_prefix, grid, slices, train):
        """The encoder layers with TokenLearner / TokenFuser, then the final LayerNorm.

        x: `[batch, num_prefix + slices * positions, width]`, the positions of each of `slices` groups
        contiguous (one group for images; one per temporal slice in ViViT), `grid` the (height, width) of a
        group's positions. TokenLearner runs per group, so after it each group holds `num_tokens` tokens."""
        tl = self.token_learner
        for i in range(self.depth):
            block = self._block(i, self.depth, f"encoderblock_{i}")
            if tl is not None and tl.use_fuser and i >= tl.layer:
                prefix, patches = x[:, :num_prefix], x[:, num_prefix:]
                tokens = self._learn_tokens(_fold(patches, slices), grid, train, f"token_learner_{i}")
                y = block(jnp.concatenate([prefix, _unfold(tokens, slices)], axis=1), train=train)
                fused = TokenFuser(tl.bottleneck_dim, self.dropout_rate, dtype=self.dtype, name=f"token_fuser_{i}")(
                    _fold(y[:, num_prefix:], slices), _fold(patches, slices), train=train)
                x = jnp.concatenate([y[:, :num_prefix], patches + _unfold(fused, slices)], axis=1)
                continue
            if tl is not None and i == tl.layer:
                tokens = self._learn_tokens(_fold(x[:, num_prefix:], slices), grid, train, "token_learner")
                x = jnp.concatenate([x[:, :num_prefix], _unfold(tokens, slices)], axis=1)
                grid = None
            x = block(x, train=train)
        return layer_norm("encoder_norm", dtype=self.dtype)(x)

    def _classify(self, x):
        """Pooled features `[batch, width]` -> optional tanh pre-logits -> logits (or the features when
        num_classes is 0); the features are sown as 'pre_logits'."""
        if self.representation_size:
            x = nn.tanh(nn.Dense(self.representation_size, dtype=self.dtype, name="pre_logits",
                                 kernel_init=param_with_axes(nn.initializers.lecun_normal(), ("embed", "mlp")),
                                 bias_init=param_with_axes(nn.initializers.zeros, ("mlp",)))(x))
        x = x.astype(jnp.float32)
        self.sow("intermediates", "pre_logits", x)
        if not self.num_classes:
            return x
        return nn.Dense(self.num_classes, name="head",
                        kernel_init=param_with_axes(nn.initializers.zeros, (None, "classes")),
                        bias_init=param_with_axes(nn.initializers.constant(self.head_bias_init), ("classes",)))(x)

    def _learn_tokens(self, patches, grid, train, name):
        """patches: `[batch, positions, width]` -> `[batch, num_tokens, width]`."""
        tl = self.token_learner
        if tl.version == "v1.0":
            if grid is None:
                raise ValueError("TokenLearner v1.0 needs the spatial grid of the patch tokens")
            patches = patches.reshape(patches.shape[0], *grid, patches.shape[-1])
        module = make_token_learner(tl.version, tl.num_tokens, bottleneck_dim=tl.bottleneck_dim,
                                    dropout_rate=self.dropout_rate, dtype=self.dtype, name=name)
        return module(patches, train=train)


def _positive_or(value, default):
    return value if value and value > 0 else default


@register("vit")
def build_vit(config) -> ViT:
    """Builds a ViT from `config.model`: `variant` ('B/16'), optional positive `width`, `depth`,
    `num_heads`, `mlp_dim`, `patch_size` overriding it, and the `token_learner` section."""
    size, patch = parse_variant(config.variant)
    width, depth, heads, mlp_dim = VARIANTS[size]
    depth = _positive_or(config.get("depth"), depth)
    spec = None
    tl_config = config.get("token_learner")
    if tl_config is not None and tl_config.get("enabled", False):
        if tl_config.num_tokens <= 0:
            raise ValueError(f"config.model.token_learner.num_tokens={tl_config.num_tokens}: expected > 0")
        if tl_config.version not in ("v1.1", "v1.0"):
            raise ValueError(f"config.model.token_learner.version={tl_config.version!r}: expected 'v1.1' or 'v1.0'")
        spec = TokenLearnerSpec(
            layer=token_learner_layer(tl_config.location, depth), num_tokens=tl_config.num_tokens,
            version=tl_config.version, use_fuser=tl_config.use_fuser,
            bottleneck_dim=tl_config.get("bottleneck_dim", 64))
    if config.classifier not in ("token", "gap"):
        raise ValueError(f"config.model.classifier={config.classifier!r}: expected 'token' or 'gap'")
    patch = _positive_or(config.get("patch_size"), patch)
    return ViT(
        num_classes=config.num_classes,
        patch_size=(patch, patch),
        width=_positive_or(config.get("width"), width),
        depth=depth,
        num_heads=_positive_or(config.get("num_heads"), heads),
        mlp_dim=_positive_or(config.get("mlp_dim"), mlp_dim),
        classifier=config.classifier,
        representation_size=config.get("representation_size") or None,
        dropout_rate=config.get("dropout_rate", 0.0),
        attention_dropout_rate=config.get("attention_dropout_rate", 0.0),
        drop_path_rate=config.get("drop_path_rate", 0.0),
        token_learner=spec,
        head_bias_init=config.get("head_bias_init", 0.0),
        dtype=jnp.dtype(config.get("dtype", "float32")),
    )
