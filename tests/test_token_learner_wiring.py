"""One TokenLearner wiring for every backbone (layers/token_learner.py): the spec parsed and checked once,
`learned_tokens` with and without the fuser, and a hierarchical stage run on learned tokens (shapes,
parameter scopes, the fuser's identity start)."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokenlearner_jax import models
from tokenlearner_jax.layers import token_learner
from tokenlearner_jax.layers.token_learner import StageTokenLearner, TokenLearnerSpec


class Host(nn.Module):
    """A stand-in backbone stage: one Dense block on the channels, run by StageTokenLearner."""

    spec: TokenLearnerSpec

    @nn.compact
    def __call__(self, x):
        block = nn.Dense(x.shape[-1], name="block")
        seen = []

        def stage(grid):
            seen.append(grid.shape)
            return block(grid)

        out = StageTokenLearner(self.spec, name="stage_tokens")(x, stage, train=False)
        self.sow("intermediates", "stage_input", seen[0])
        return out


def run(spec, x):
    module = Host(spec)
    variables = flax.core.meta.unbox(module.init(jax.random.key(0), x))
    out, state = module.apply(variables, x, mutable=["intermediates"])
    return variables["params"], np.asarray(out), state["intermediates"]["stage_input"][0]


@pytest.mark.parametrize("version", ["v1.1", "v1.0"])
def test_without_the_fuser_the_stage_runs_on_a_one_by_n_grid_of_learned_tokens(version):
    x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 7, 16), jnp.float32)
    params, out, stage_input = run(TokenLearnerSpec(location=0, num_tokens=3, version=version), x)
    assert stage_input == (2, 1, 3, 16)
    assert out.shape == (2, 1, 3, 16)
    # The stage's own parameters stay in the caller's scope, the TokenLearner's under the wrapper.
    assert set(params) == {"block", "stage_tokens"}
    assert set(params["stage_tokens"]) == {"token_learner"}


def test_with_the_fuser_the_grid_is_kept_and_starts_as_the_identity():
    x = jnp.asarray(np.random.RandomState(1).randn(2, 4, 6, 16), jnp.float32)
    params, out, stage_input = run(TokenLearnerSpec(location=0, num_tokens=5, use_fuser=True), x)
    assert stage_input == (2, 1, 5, 16)
    assert set(params["stage_tokens"]) == {"token_learner", "token_fuser"}
    # TokenFuser's token-mixing Dense is zero-initialised: x + fuse(...) == x at initialisation.
    np.testing.assert_allclose(out, np.asarray(x), atol=1e-6)


def test_learned_tokens_are_attention_weighted_sums_of_the_grid():
    """v1.1: each token is a convex combination of the grid's positions, so a constant grid gives the
    same constant for every token whatever the learned maps."""
    x = jnp.full((1, 3, 3, 8), 0.7)
    module = StageTokenLearner(TokenLearnerSpec(location=0, num_tokens=4))
    variables = module.init(jax.random.key(0), x, lambda g: g, train=False)
    out = module.apply(variables, x, lambda g: g, train=False)
    np.testing.assert_allclose(np.asarray(out), 0.7, atol=1e-6)


def test_a_stage_that_changes_the_token_grid_is_rejected():
    module = StageTokenLearner(TokenLearnerSpec(location=0, num_tokens=4))
    with pytest.raises(ValueError, match="changed the learned-token grid"):
        module.init(jax.random.key(0), jnp.ones((1, 3, 3, 8)), lambda g: g[:, :, :2], train=False)


def tl_config(**overrides):
    values = dict(token_learner.default_config(location=3), enabled=True)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_parse_spec_resolves_indices_fractions_and_the_last_stage():
    assert token_learner.parse_spec(None, num_locations=4, what="stage") is None
    assert token_learner.parse_spec(tl_config(enabled=False), num_locations=4, what="stage") is None
    assert token_learner.parse_spec(tl_config(use_fuser=True, bottleneck_dim=32, dropout_rate=0.1, gelu="tanh"),
                                    num_locations=4, what="stage") == \
        TokenLearnerSpec(location=3, num_tokens=8, version="v1.1", use_fuser=True, bottleneck_dim=32,
                         dropout_rate=0.1, gelu="tanh")
    assert token_learner.parse_spec(tl_config(location=-1), num_locations=3, what="level").location == 2
    layer = lambda location: token_learner.parse_spec(tl_config(location=location), num_locations=12,
                                                      what="layer", fraction=True).location
    assert [layer(0.5), layer(0.25), layer(0.0), layer(9)] == [6, 3, 0, 9]


@pytest.mark.parametrize("override, fraction, message", [
    (dict(location=4), False, "token_learner.location=4"),
    (dict(location=-2), False, "token_learner.location=-2"),
    (dict(location=1.5), False, "token_learner.location=1.5"),
    (dict(location=12), True, "token_learner.location=12"),
    (dict(location=2.5), True, "token_learner.location=2.5"),
    (dict(location=-0.1), True, "token_learner.location=-0.1"),
    (dict(num_tokens=0), False, "token_learner.num_tokens=0"),
    (dict(version="v2"), False, "token_learner.version='v2'"),
    (dict(bottleneck_dim=0), False, "token_learner.bottleneck_dim=0"),
    (dict(dropout_rate=1.0), False, "token_learner.dropout_rate=1.0"),
    (dict(gelu="relu"), False, "token_learner.gelu='relu'"),
])
def test_parse_spec_names_the_bad_field(override, fraction, message):
    with pytest.raises(ValueError, match=message):
        token_learner.parse_spec(tl_config(**override), num_locations=12 if fraction else 4, what="x",
                                 fraction=fraction)


@pytest.mark.parametrize("name, overrides, where", [
    ("vit", dict(variant="Ti/16", depth=4), "layer"),
    ("vivit", dict(variant="Ti/16", depth=4), "layer"),
    ("poolformer", dict(depths=(1, 1, 1, 1), dims=(8, 16, 32, 64)), "stage"),
    ("nest", dict(dims=(16, 32, 64), num_heads=(1, 2, 4), depths=(1, 1, 1)), "level"),
    ("maxvit", dict(stem_widths=(8, 8), depths=(1, 1, 1, 1), dims=(32, 32, 32, 32)), "stage"),
])
def test_every_backbone_takes_the_same_token_learner_section(name, overrides, where):
    """The same fields, defaults and checks everywhere; `location` is the one name for where it goes."""
    config = models.config(name, token_learner=dict(enabled=True, num_tokens=4, dropout_rate=0.1), **overrides)
    assert set(config.token_learner) == set(token_learner.default_config())
    spec = models.build(config).token_learner
    assert (spec.num_tokens, spec.dropout_rate) == (4, 0.1)
    config.token_learner.location = 99
    with pytest.raises(ValueError, match=rf"config.model.token_learner.location=99(\.0)?: .*{where}"):
        models.build(config)
