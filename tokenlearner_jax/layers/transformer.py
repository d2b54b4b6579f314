"""The pre-norm transformer encoder block used by ViT, ViViT and NesT."""

import flax.linen as nn
import jax.numpy as jnp

from tokenlearner_jax.layers.attention import DropPath, MlpBlock, MultiHeadAttention, layer_norm
from tokenlearner_jax.layers.partitioning import constrain_batch


class EncoderBlock(nn.Module):
    """x + DropPath(Attention(LN(x))), then x + DropPath(MLP(LN(x))).

    Attributes:
      num_heads, mlp_dim: attention heads and MLP hidden width.
      dropout_rate: dropout after attention and inside the MLP.
      attention_dropout_rate: dropout on the attention weights.
      drop_path_rate: stochastic-depth rate of both branches.
      gelu: the MLP's GELU, 'erf' (exact; timm) or 'tanh' (the approximation vit_jax and big_vision train with).
    """

    num_heads: int
    mlp_dim: int
    dropout_rate: float = 0.0
    attention_dropout_rate: float = 0.0
    drop_path_rate: float = 0.0
    layer_norm_epsilon: float = 1e-6
    dtype: jnp.dtype = jnp.float32
    num_kv_heads: int = 0  # 1: multi-query attention (MultiHeadAttention.num_kv_heads)
    gelu: str = "erf"

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, length, width]` -> `[batch, length, width]`."""
        x = constrain_batch(x)
        y = layer_norm("LayerNorm_0", epsilon=self.layer_norm_epsilon, dtype=self.dtype)(x)
        y = MultiHeadAttention(self.num_heads, self.attention_dropout_rate, dtype=self.dtype,
                               num_kv_heads=self.num_kv_heads, name="MultiHeadDotProductAttention_1")(y, train=train)
        y = nn.Dropout(self.dropout_rate)(y, deterministic=not train)
        x = x + DropPath(self.drop_path_rate)(y, train=train)
        y = layer_norm("LayerNorm_2", epsilon=self.layer_norm_epsilon, dtype=self.dtype)(x)
        y = MlpBlock(self.mlp_dim, dropout_rate=self.dropout_rate, dtype=self.dtype,
                     approximate_gelu=self.gelu == "tanh", name="MlpBlock_3")(y, train=train)
        return x + DropPath(self.drop_path_rate)(y, train=train)
