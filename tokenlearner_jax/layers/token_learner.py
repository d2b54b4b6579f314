"""TokenLearner (v1.1 and v1.0), TokenFuser (arXiv 2106.11297), and how every backbone wires them in.

TokenLearner turns `[batch, positions, width]` features into `[batch, num_tokens, width]` learned
tokens, each a spatially weighted combination of the (un-normalised) input features:
- v1.1 (default): LayerNorm -> MLP (bottleneck 64, GELU) -> num_tokens maps -> softmax over space.
- v1.0: LayerNorm -> three 3x3 convs (num_tokens channels, no bias, GELU) -> one 3x3 conv ->
  element-wise sigmoid -> weighted *sum* over space. Needs the spatial grid.
TokenFuser maps learned tokens back to every position: `[batch, num_tokens, width]` and the
original `[batch, positions, width]` -> `[batch, positions, width]`.

One wiring serves every backbone (ViT, ViViT, PoolFormer, NesT, MaxViT). The `config.model.token_learner`
section (`default_config`) is parsed and checked once, by `parse_spec`, into a `TokenLearnerSpec`;
`location` says where it goes in every backbone: before encoder layer `location` in ViT / ViViT (a
fraction of the depth, 0.5 = half-way, or a layer index), the stage of that 0-based index in PoolFormer
and MaxViT, the level of that index in NesT (-1: the last stage / level). `learned_tokens` then runs
part of the network on learned tokens:
- without the fuser: x -> TokenLearner -> run(tokens); the caller carries on with the tokens;
- with the fuser: tokens = TokenLearner(x) -> run(tokens) -> x + TokenFuser(tokens, x): the output keeps
  the input positions (and starts as the identity, since the fuser's token-mixing Dense is zero-initialised).
ViT runs it once without the fuser (the rest of the encoder on the tokens) or once per layer with it;
hierarchical backbones run one stage through `StageTokenLearner`, the tokens laid out as a 1 x N grid.
"""

import dataclasses
from typing import Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.layers.attention import GELUS, MlpBlock, gelu, layer_norm
from tokenlearner_jax.layers.partitioning import param_with_axes

VERSIONS = ("v1.1", "v1.0")


def default_config(location=0.5) -> dict:
    """Every field of `config.model.token_learner`, off by default; `location` is the backbone's default."""
    return dict(enabled=False, version="v1.1", num_tokens=8, location=location, use_fuser=False,
                bottleneck_dim=64, dropout_rate=0.0, gelu="tanh")


@dataclasses.dataclass(frozen=True)
class TokenLearnerSpec:
    """Where and how TokenLearner runs, resolved for one backbone.

    Attributes:
      location: the encoder layer (ViT) or the 0-based stage / level (hierarchical backbones).
      num_tokens: tokens to learn.
      version: 'v1.1' or 'v1.0'.
      use_fuser: TokenFuser after the part of the network that runs on the tokens.
      bottleneck_dim: hidden width of v1.1's attention MLP and of the fuser's gate MLP.
      dropout_rate: dropout inside TokenLearner's and TokenFuser's MLPs and on the fuser's output.
      gelu: 'tanh' (Flax's default approximation, which the official TokenLearner code uses) or 'erf'
        (the exact GELU).
    """

    location: int
    num_tokens: int = 8
    version: str = "v1.1"
    use_fuser: bool = False
    bottleneck_dim: int = 64
    dropout_rate: float = 0.0
    gelu: str = "tanh"


def parse_spec(tl_config, *, num_locations: int, what: str, fraction: bool = False) -> Optional[TokenLearnerSpec]:
    """`config.model.token_learner` -> a TokenLearnerSpec, or None when it is absent or not enabled.

    Args:
      tl_config: the section (`default_config()` fields).
      num_locations: the encoder depth (ViT) or the number of stages / levels.
      what: 'layer', 'stage' or 'level', for messages.
      fraction: whether `location` may be a fraction of `num_locations` in [0, 1) (ViT's depth); otherwise
        it is an index in [0, num_locations), with -1 for the last.

    Raises ValueError naming the field for any value out of range."""
    if tl_config is None or not tl_config.get("enabled", False):
        return None
    field = "config.model.token_learner"
    location = tl_config.location
    if fraction:
        if 0 <= location < 1:
            index = int(round(location * num_locations))
        elif location >= 1 and float(location).is_integer() and location < num_locations:
            index = int(location)
        else:
            raise ValueError(f"{field}.location={location}: expected a fraction of the depth in [0, 1) or an "
                             f"integer {what} index in [1, {num_locations - 1}] (depth {num_locations})")
    else:
        if not float(location).is_integer() or not -1 <= location < num_locations:
            raise ValueError(f"{field}.location={location}: expected a 0-based {what} index in "
                             f"[0, {num_locations - 1}], or -1 for the last {what}")
        index = int(location) % num_locations
    checks = ((tl_config.num_tokens > 0, "num_tokens", tl_config.num_tokens, "> 0"),
              (tl_config.version in VERSIONS, "version", tl_config.version, f"one of {VERSIONS}"),
              (tl_config.bottleneck_dim > 0, "bottleneck_dim", tl_config.bottleneck_dim, "> 0"),
              (0 <= tl_config.dropout_rate < 1, "dropout_rate", tl_config.dropout_rate, "in [0, 1)"),
              (tl_config.gelu in GELUS, "gelu", tl_config.gelu, f"one of {GELUS}"))
    for ok, name, value, expected in checks:
        if not ok:
            raise ValueError(f"{field}.{name}={value!r}: expected {expected}")
    return TokenLearnerSpec(location=index, num_tokens=tl_config.num_tokens, version=tl_config.version,
                            use_fuser=tl_config.use_fuser, bottleneck_dim=tl_config.bottleneck_dim,
                            dropout_rate=tl_config.dropout_rate, gelu=tl_config.gelu)


class TokenLearnerV11(nn.Module):
    """TokenLearner v1.1: softmax spatial attention from an MLP. Works on any number of positions.

    Attributes:
      num_tokens: tokens to learn.
      bottleneck_dim: hidden width of the attention MLP.
      gelu: 'tanh' (the official code's) or 'erf'.
    """

    num_tokens: int
    bottleneck_dim: int = 64
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, positions, width]` or `[batch, height, width, channels]` -> `[batch, num_tokens, width]`."""
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        maps = layer_norm("LayerNorm_0", dtype=self.dtype)(x)
        maps = MlpBlock(self.bottleneck_dim, self.num_tokens, self.dropout_rate, dtype=self.dtype,
                        hidden_axis=None, out_axis="tokens", approximate_gelu=self.gelu == "tanh",
                        name="token_masking")(maps, train=train)
        attention = jax.nn.softmax(jnp.swapaxes(maps, 1, 2).astype(jnp.float32), axis=-1)
        self.sow("intermediates", "token_attention", attention)  # [batch, num_tokens, positions]
        return jnp.einsum("bnp,bpc->bnc", attention.astype(x.dtype), x)


class TokenLearnerV10(nn.Module):
    """TokenLearner v1.0: sigmoid spatial maps from 3x3 convolutions, pooled by a weighted sum.

    Attributes:
      num_tokens: tokens to learn (also the channel count of every conv).
      gelu: 'tanh' (the official code's) or 'erf'.
    """

    num_tokens: int
    dtype: jnp.dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, x, *, train: bool):
        """x: `[batch, height, width, channels]` (any height and width) -> `[batch, num_tokens, channels]`."""
        del train
        if x.ndim != 4:
            raise ValueError(f"TokenLearner v1.0 needs a spatial grid [batch, height, width, channels], got {x.shape}")
        maps = layer_norm("LayerNorm_0", dtype=self.dtype)(x)
        for i in range(4):
            maps = nn.Conv(self.num_tokens, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype,
                           kernel_init=param_with_axes(nn.initializers.lecun_normal(),
                                                       (None, None, None, "tokens")),
                           name=f"Conv_{i}")(maps)
            if i < 3:
                maps = gelu(maps, approximate=self.gelu == "tanh")
        batch, _, _, channels = x.shape
        attention = jax.nn.sigmoid(maps.reshape(batch, -1, self.num_tokens).astype(jnp.float32))
        attention = jnp.swapaxes(attention, 1, 2)
        self.sow("intermediates", "token_attention", attention)  # [batch, num_tokens, positions]
        return jnp.einsum("bnp,bpc->bnc", attention.astype(x.dtype), x.reshape(batch, -1, channels))


class TokenFuser(nn.Module):
    """Maps learned tokens back to every position.

    tokens -> LayerNorm -> Dense over the token axis (zero-initialised) -> LayerNorm; the gate is
    sigmoid(MLP(LayerNorm(original))) of shape `[batch, positions, num_tokens]`; output = gate @ tokens.
    With the zero-initialised mixing Dense the output starts at zero, so `original + fuser(...)`
    starts as the identity.
    """

    bottleneck_dim: int = 64
    dropout_rate: float = 0.0
    dtype: jnp.dtype = jnp.float32
    gelu: str = "tanh"

    @nn.compact
    def __call__(self, tokens, original, *, train: bool):
        """tokens: `[batch, num_tokens, width]`; original: `[batch, positions, width]` ->
        `[batch, positions, width]`."""
        num_tokens = tokens.shape[1]
        tokens = layer_norm("fuser_mix_norm1", dtype=self.dtype)(tokens)
        tokens = jnp.swapaxes(tokens, 1, 2)  # [batch, width, num_tokens]
        tokens = nn.Dense(num_tokens, dtype=self.dtype, name="token_mixing",
                          kernel_init=param_with_axes(nn.initializers.zeros, (None, "tokens")),
                          bias_init=param_with_axes(nn.initializers.zeros, ("tokens",)))(tokens)
        tokens = layer_norm("fuser_mix_norm2", dtype=self.dtype)(jnp.swapaxes(tokens, 1, 2))
        gate = layer_norm("LayerNorm_0", dtype=self.dtype)(original)
        gate = MlpBlock(self.bottleneck_dim, num_tokens, self.dropout_rate, dtype=self.dtype,
                        hidden_axis=None, out_axis="tokens", approximate_gelu=self.gelu == "tanh",
                        name="token_masking")(gate, train=train)
        out = jnp.einsum("bpn,bnc->bpc", jax.nn.sigmoid(gate), tokens)
        return nn.Dropout(self.dropout_rate)(out, deterministic=not train)


def make_token_learner(spec: TokenLearnerSpec, *, dtype=jnp.float32, name=None) -> nn.Module:
    """The TokenLearner module of `spec.version`."""
    if spec.version == "v1.1":
        return TokenLearnerV11(spec.num_tokens, spec.bottleneck_dim, spec.dropout_rate, dtype=dtype,
                               gelu=spec.gelu, name=name)
    if spec.version == "v1.0":
        return TokenLearnerV10(spec.num_tokens, dtype=dtype, gelu=spec.gelu, name=name)
    raise ValueError(f"config.model.token_learner.version={spec.version!r}: expected one of {VERSIONS}")


def learned_tokens(spec: TokenLearnerSpec, x, run: Callable[[jax.Array], jax.Array], *, train: bool,
                   dtype=jnp.float32, learner_name: str = "token_learner", fuser_name: str = "token_fuser"):
    """Runs `run` on the tokens TokenLearner learns from `x` (see the module docstring).

    Call it from inside a module's compact method: the TokenLearner and TokenFuser are created there,
    under `learner_name` and `fuser_name`, as are any modules `run` calls.

    Args:
      x: features `[batch, positions, width]`, or a grid `[batch, height, width, channels]` (v1.0 needs
        the grid).
      run: maps tokens `[batch, num_tokens, width]` to the same shape.

    Returns:
      run(tokens) `[batch, num_tokens, width]` without the fuser; x + TokenFuser(run(tokens), x), of x's
      shape, with it."""
    tokens = make_token_learner(spec, dtype=dtype, name=learner_name)(x, train=train)
    out = run(tokens)
    if out.shape != tokens.shape:
        raise ValueError(f"the network run on learned tokens changed their shape {tokens.shape} to {out.shape}")
    if not spec.use_fuser:
        return out
    positions = x.reshape(x.shape[0], -1, x.shape[-1])
    fused = TokenFuser(spec.bottleneck_dim, spec.dropout_rate, dtype=dtype, gelu=spec.gelu, name=fuser_name)(
        out, positions, train=train)
    return x + fused.reshape(x.shape).astype(x.dtype)


class StageTokenLearner(nn.Module):
    """A stage of a hierarchical backbone (PoolFormer, NesT, MaxViT) run on learned tokens.

    The tokens are laid out as a 1 x N grid `[batch, 1, N, channels]` ordered by their learned slot, so
    that a stage written for grids runs on them unchanged; how each token mixer treats that grid is in
    layers/mixers.py. Without the fuser every later layer (a downsampling conv, later stages, the head)
    sees the 1 x N grid, and a stride-2 downsampling merges neighbouring slots.

    Attributes:
      spec: the parsed `config.model.token_learner` (its `location` is the caller's business).
    """

    spec: TokenLearnerSpec
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, stage: Callable[[jax.Array], jax.Array], *, train: bool):
        """x: `[batch, height, width, channels]`; `stage` maps a grid `[batch, h, w, channels]` to the same
        shape and must only call modules its caller has already created (so that their parameters stay in
        the caller's scope, not under this module). Returns `[batch, 1, num_tokens, channels]` without the
        fuser, `[batch, height, width, channels]` with it."""
        batch, channels = x.shape[0], x.shape[-1]

        def run(tokens):  # [batch, N, channels] -> the stage on the 1 x N grid -> [batch, N, channels]
            grid = tokens.reshape(batch, 1, -1, channels)
            out = stage(grid)
            if out.shape != grid.shape:
                raise ValueError(f"the stage changed the learned-token grid {grid.shape} to {out.shape}")
            return out.reshape(tokens.shape)

        out = learned_tokens(self.spec, x, run, train=train, dtype=self.dtype)
        return out if self.spec.use_fuser else out.reshape(batch, 1, -1, channels)
