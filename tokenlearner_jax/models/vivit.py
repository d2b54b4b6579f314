"""ViViT (arXiv 2103.15691) with TokenLearner per temporal slice (arXiv 2106.11297).

A video `[batch, frames, height, width, channels]` is cut into tubelets of `patch_size` = (pt, ph, pw)
by a 3D convolution (kernel = stride): T = frames/pt temporal slices of N = (height/ph)(width/pw)
tokens each. Position embedding: a spatial one over [class token,] N tokens, the same for every
slice (ViT's, same name and shape, so a 2D ViT's loads unchanged), plus in the joint encoder a
temporal one `[1, T, 1, width]`, zero-initialised (so a model initialised from a 2D ViT starts with
the 2D position embedding tiled over time).

Encoders (`encoder`):
- 'joint' (unfactorised, ViViT model 1): one transformer over all T x N tokens (+ one class token).
- 'factorised' (ViViT model 2): the spatial transformer (ViT's encoder, same parameter names) over
  each slice's N tokens (+ a class token per slice), giving one feature per slice, then a temporal
  transformer (`temporal_*`, `temporal_depth` layers) over the T slice features (+ a temporal class
  token, with its own position embedding).
`classifier` 'token' reads the class token(s), 'gap' averages the tokens, in both stages.

TokenLearner (`token_learner`, placed as in ViT by a fraction of `depth` or a layer index) runs per
temporal slice, time folded into the batch: each slice's N tokens become `num_tokens` learned
tokens, so the joint encoder continues on T x num_tokens tokens; with the fuser, every layer from
the location on runs TokenLearner -> block -> TokenFuser per slice. In the factorised encoder it runs
inside the spatial transformer, which sees one slice at a time anyway.
"""

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers import AddPositionEmbedding, PatchEmbedding
from tokenlearner_jax.layers.attention import layer_norm
from tokenlearner_jax.layers.partitioning import constrain_batch, param_with_axes
from tokenlearner_jax.models import vit
from tokenlearner_jax.models.registry import check, register

ENCODERS = ("joint", "factorised")


class ViViT(vit.ViT):
    """Video Vision Transformer classifier; the ViT fields, with `patch_size` the tubelet (pt, ph, pw).

    Attributes:
      encoder: 'joint' or 'factorised'.
      temporal_depth: layers of the factorised encoder's temporal transformer.
    """

    encoder: str = "joint"
    temporal_depth: int = 4

    @nn.compact
    def __call__(self, videos, *, train: bool = False):
        """videos: float32 `[batch, frames, height, width, channels]` -> logits `[batch, num_classes]`.

        Sown into 'intermediates': 'pre_logits' `[batch, width or representation_size]` and, in the
        factorised encoder, 'slice_features' `[batch, T, width]` (the spatial transformer's output)."""
        x = PatchEmbedding(self.width, self.patch_size, dtype=self.dtype, name="stem")(videos.astype(self.dtype))
        batch, slices, grid_h, grid_w, _ = x.shape
        x = x.reshape(batch * slices, grid_h * grid_w, self.width)
        x, num_prefix = self._prepend_class_token(x, "cls")
        x = AddPositionEmbedding(name="posembed_input")(x)  # the same for every slice

        if self.encoder == "joint":
            x = x.reshape(batch, slices, num_prefix + grid_h * grid_w, self.width)
            temporal = self.param("temporal_pos_embedding", param_with_axes(nn.initializers.zeros,
                                                                            (None, None, None, "embed")),
                                  (1, slices, 1, self.width))
            patches = (x[:, :, num_prefix:] + temporal.astype(x.dtype)).reshape(batch, -1, self.width)
            x = jnp.concatenate([x[:, 0, :num_prefix], patches], axis=1)  # one class token for the video
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
            x = self._pool(self._encode(x, num_prefix, (grid_h, grid_w), slices, train))
        elif self.encoder == "factorised":
            x = nn.Dropout(self.dropout_rate)(x, deterministic=not train)
            x = self._pool(self._encode(x, num_prefix, (grid_h, grid_w), 1, train))
            x = constrain_batch(x.reshape(batch, slices, self.width))
            self.sow("intermediates", "slice_features", x)
            x, num_prefix = self._prepend_class_token(x, "temporal_cls")
            x = AddPositionEmbedding(name="temporal_posembed")(x)
            for i in range(self.temporal_depth):
                x = self._block(i, self.temporal_depth, f"temporal_encoderblock_{i}")(x, train=train)
            x = self._pool(layer_norm("temporal_encoder_norm", dtype=self.dtype)(x))
        else:
            raise ValueError(f"config.model.encoder={self.encoder!r}: expected one of {ENCODERS}")

        return self._classify(x)


def default_config() -> dict:
    """Every field of `config.model` for a ViViT: ViT's (models/vit.default_config; `variant` 'B/16' sets
    the width, depth, heads and the spatial patch) plus the tubelet's frames, the encoder ('joint' or
    'factorised') and the factorised encoder's temporal depth."""
    return dict(vit.default_config(), num_classes=400, classifier="token", tubelet_frames=2, encoder="joint",
                temporal_depth=4)


@register("vivit", default_config)
def build_vivit(config) -> ViViT:
    """Builds a ViViT from `config.model` (`default_config`), raising ValueError naming a bad field."""
    check(config.encoder in ENCODERS, "encoder", config.encoder, f"one of {ENCODERS}")
    check(config.tubelet_frames >= 1, "tubelet_frames", config.tubelet_frames, ">= 1")
    check(config.encoder != "factorised" or config.temporal_depth >= 1, "temporal_depth", config.temporal_depth,
          ">= 1 for the factorised encoder")
    image_model = vit.build_vit(config)
    fields = {f.name: getattr(image_model, f.name) for f in dataclasses.fields(vit.ViT)
              if f.init and f.name not in ("parent", "name")}
    fields["patch_size"] = (config.tubelet_frames,) + tuple(image_model.patch_size)
    return ViViT(**fields, encoder=config.encoder, temporal_depth=config.temporal_depth)
