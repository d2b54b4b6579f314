"""Building blocks shared by every backbone: attention, MLP, drop path, embeddings, TokenLearner."""

from tokenlearner_jax.layers.attention import DropPath, MlpBlock, MultiHeadAttention
from tokenlearner_jax.layers.embedding import AddPositionEmbedding, PatchEmbedding
from tokenlearner_jax.layers.partitioning import DEFAULT_RULES, param_with_axes
from tokenlearner_jax.layers.relative_position import RelativePositionBias
from tokenlearner_jax.layers.token_learner import TokenFuser, TokenLearnerV10, TokenLearnerV11, make_token_learner
from tokenlearner_jax.layers.transformer import EncoderBlock
