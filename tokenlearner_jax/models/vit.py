"""Vision Transformer (arXiv 2010.11929), optionally with TokenLearner / TokenFuser (arXiv 2106.11297).

Without TokenLearner this is the standard pre-norm ViT. With it, the config picks where it goes:
- `use_fuser=False`: TokenLearner runs once before encoder layer L; every later layer sees only
  `num_tokens` tokens (plus the class token, which is kept aside and carried along).
- `use_fuser=True`: every layer from L on runs TokenLearner -> block -> TokenFuser -> + residual,
  keeping all positions.
"""

import re
from typing import Optional, Tuple

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import AddPositionEmbedding, EncoderBlock, PatchEmbedding
from tokenlearner_jax.layers import token_learner as token_learner_lib
from tokenlearner_jax.layers.attention import GELUS, layer_norm
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.layers.token_learner import TokenLearnerSpec
from tokenlearner_jax.models.registry import check, check_common, register

# name -> (width, depth, heads, mlp_dim)
VARIANTS = {
    "Ti": (192, 12, 3, 768),
    "S": (384, 12, 6, 1536),
    "B": (768, 12, 12, 3072),
    "L": (1024, 24, 16, 4096),
    "H": (1280, 32, 16, 5120),
}
CLASSIFIERS = ("token", "gap")


def default_config() -> dict:
    """Every field of `config.model` for a ViT. `variant` ('B/16': size and patch) sets width, depth,
    num_heads, mlp_dim and patch_size; a positive value of any of those overrides it. `dtype` is the
    computation dtype (parameters stay float32); `token_learner.location` is a fraction of the depth
    (0.5: before layer 6 of 12) or a layer index. `gelu` is the encoder's GELU ('erf': timm's weights;
    'tanh': vit_jax / big_vision's, which `convert` sets from the source), apart from TokenLearner's own."""
    return dict(
        variant="B/16", num_classes=1000, classifier="gap", representation_size=0,
        width=-1, depth=-1, num_heads=-1, mlp_dim=-1, patch_size=-1,
        dropout_rate=0.0, attention_dropout_rate=0.0, drop_path_rate=0.0, head_bias_init=0.0, gelu="erf",
        dtype="float32", token_learner=token_learner_lib.default_config(location=0.5))


def parse_variant(variant: str) -> Tuple[str, int]:
    """'B/16' -> ('B', 16)."""
    match = re.fullmatch(r"(Ti|S|B|L|H)/(\d+)", variant or "")
    if not match:
        raise ValueError(f"config.model.variant={variant!r}: expected '<size>/<patch>' with size in "
                         f"{sorted(VARIANTS)}, e.g. 'B/16'")
    return match.group(1), int(match.group(2))


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
      gelu: the encoder MLPs' GELU: 'erf' (exact, as timm) or 'tanh' (as vit_jax / big_vision trained).
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
    gelu: str = "erf"
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

    def check_input(self, input_shape):
        """Raises ValueError naming the config field when inputs of `input_shape` ((height, width, channels),
        or (frames, height, width, channels) for ViViT) do not fit: sides not multiples of the patch (or
        tubelet), or more learned tokens than the patches they are learned from."""
        sides, patch = tuple(input_shape[:-1]), tuple(self.patch_size)
        frames = sides[0] if len(sides) == 3 else 0
        if len(patch) == 2 and frames:
            raise ValueError(f"config.dataset.num_frames={frames}: expected 0 (a ViT takes images; ViViT takes videos)")
        if len(patch) == 3 and (len(sides) != 3 or frames % patch[0]):
            raise ValueError(f"config.dataset.num_frames={frames}: expected a positive multiple of "
                             f"config.model.tubelet_frames={patch[0]}")
        if any(n % p for n, p in zip(sides[-2:], patch[-2:])):
            raise ValueError(f"config.dataset.image_size={sides[-1]}: expected a multiple of the patch size "
                             f"{patch[-1]} (config.model.variant / patch_size)")
        positions = (sides[-2] // patch[-2]) * (sides[-1] // patch[-1])
        if self.token_learner is not None and self.token_learner.num_tokens > positions:
            raise ValueError(f"config.model.token_learner.num_tokens={self.token_learner.num_tokens}: expected at "
                             f"most the {positions} patches it learns from")

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
                            drop_path_rate=self.drop_path_rate * i / max(depth - 1, 1), dtype=self.dtype,
                            gelu=self.gelu, name=name)

    def _encode(self, x, num_prefix, grid, slices, train):
        """The encoder layers with TokenLearner / TokenFuser, then the final LayerNorm.

        x: `[batch, num_prefix + slices * positions, width]`, the positions of each of `slices` groups
        contiguous (one group for images; one per temporal slice in ViViT), `grid` the (height, width) of a
        group's positions. TokenLearner runs per group, so after it each group holds `num_tokens` tokens."""
        tl = self.token_learner
        for i in range(self.depth):
            block = self._block(i, self.depth, f"encoderblock_{i}")
            if tl is not None and tl.use_fuser and i >= tl.location:
                prefix, patches = x[:, :num_prefix], x[:, num_prefix:]
                prefix_out = []

                def run(tokens, prefix=prefix, prefix_out=prefix_out, block=block):
                    y = block(jnp.concatenate([prefix, _unfold(tokens, slices)], axis=1), train=train)
                    prefix_out.append(y[:, :num_prefix])
                    return _fold(y[:, num_prefix:], slices)

                fused = token_learner_lib.learned_tokens(
                    tl, self._group_input(patches, grid, slices), run, train=train, dtype=self.dtype,
                    learner_name=f"token_learner_{i}", fuser_name=f"token_fuser_{i}")
                fused = fused.reshape(fused.shape[0], -1, fused.shape[-1])  # a v1.0 grid back to positions
                x = jnp.concatenate([prefix_out[0], _unfold(fused, slices)], axis=1)
                continue
            if tl is not None and i == tl.location:
                tokens = token_learner_lib.learned_tokens(
                    tl, self._group_input(x[:, num_prefix:], grid, slices), lambda t: t, train=train,
                    dtype=self.dtype)
                x = jnp.concatenate([x[:, :num_prefix], _unfold(tokens, slices)], axis=1)
            x = block(x, train=train)
        return layer_norm("encoder_norm", dtype=self.dtype)(x)

    def _group_input(self, patches, grid, slices):
        """Patches `[batch, slices * positions, width]` -> per-group TokenLearner input: `[batch * slices,
        positions, width]`, or the grid `[batch * slices, height, width, width]` for v1.0."""
        groups = _fold(patches, slices)
        if self.token_learner.version == "v1.0":
            return groups.reshape(groups.shape[0], *grid, groups.shape[-1])
        return groups

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


def _positive_or(value, default):
    return value if value and value > 0 else default


@register("vit", default_config)
def build_vit(config) -> ViT:
    """Builds a ViT from `config.model` (`default_config`), raising ValueError naming a bad field."""
    size, patch = parse_variant(config.variant)
    width, depth, heads, mlp_dim = VARIANTS[size]
    width, depth = _positive_or(config.width, width), _positive_or(config.depth, depth)
    heads, mlp_dim = _positive_or(config.num_heads, heads), _positive_or(config.mlp_dim, mlp_dim)
    check_common(config)
    check(config.classifier in CLASSIFIERS, "classifier", config.classifier, f"one of {CLASSIFIERS}")
    check(width % heads == 0, "num_heads", heads, f"a divisor of the width {width}")
    check(config.representation_size >= 0, "representation_size", config.representation_size, ">= 0 (0: none)")
    check(config.gelu in GELUS, "gelu", config.gelu, f"one of {GELUS}")
    spec = token_learner_lib.parse_spec(config.token_learner, num_locations=depth, what="layer", fraction=True)
    patch = _positive_or(config.patch_size, patch)
    return ViT(
        num_classes=config.num_classes,
        patch_size=(patch, patch),
        width=width,
        depth=depth,
        num_heads=heads,
        mlp_dim=mlp_dim,
        classifier=config.classifier,
        representation_size=config.representation_size or None,
        dropout_rate=config.dropout_rate,
        attention_dropout_rate=config.attention_dropout_rate,
        drop_path_rate=config.drop_path_rate,
        token_learner=spec,
        head_bias_init=config.head_bias_init,
        gelu=config.gelu,
        dtype=jnp.dtype(config.dtype),
    )
