"""TokenLearner in a hierarchical stage (layers/stage_tokens.py): shapes, parameter scopes, the fuser's
identity start, and the config checks shared by hierarchical backbones."""

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tokenlearner_jax.layers import stage_tokens


class Host(nn.Module):
    """A stand-in backbone stage: one Dense block on the channels, run by StageTokenLearner."""

    spec: stage_tokens.StageTokenSpec

    @nn.compact
    def __call__(self, x):
        block = nn.Dense(x.shape[-1], name="block")
        seen = []

        def stage(grid):
            seen.append(grid.shape)
            return block(grid)

        out = stage_tokens.StageTokenLearner(self.spec, name="stage_tokens")(x, stage, train=False)
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
    params, out, stage_input = run(stage_tokens.StageTokenSpec(stage=0, num_tokens=3, version=version), x)
    assert stage_input == (2, 1, 3, 16)
    assert out.shape == (2, 1, 3, 16)
    # The stage's own parameters stay in the caller's scope, the TokenLearner's under the wrapper.
    assert set(params) == {"block", "stage_tokens"}
    assert set(params["stage_tokens"]) == {"token_learner"}


def test_with_the_fuser_the_grid_is_kept_and_starts_as_the_identity():
    x = jnp.asarray(np.random.RandomState(1).randn(2, 4, 6, 16), jnp.float32)
    params, out, stage_input = run(stage_tokens.StageTokenSpec(stage=0, num_tokens=5, use_fuser=True), x)
    assert stage_input == (2, 1, 5, 16)
    assert set(params["stage_tokens"]) == {"token_learner", "token_fuser"}
    # TokenFuser's token-mixing Dense is zero-initialised: x + fuse(...) == x at initialisation.
    np.testing.assert_allclose(out, np.asarray(x), atol=1e-6)


def test_learned_tokens_are_attention_weighted_sums_of_the_grid():
    """v1.1: each token is a convex combination of the grid's positions, so a constant grid gives the
    same constant for every token whatever the learned maps."""
    x = jnp.full((1, 3, 3, 8), 0.7)
    module = stage_tokens.StageTokenLearner(stage_tokens.StageTokenSpec(stage=0, num_tokens=4))
    variables = module.init(jax.random.key(0), x, lambda g: g, train=False)
    out = module.apply(variables, x, lambda g: g, train=False)
    np.testing.assert_allclose(np.asarray(out), 0.7, atol=1e-6)


def test_a_stage_that_changes_the_token_grid_is_rejected():
    module = stage_tokens.StageTokenLearner(stage_tokens.StageTokenSpec(stage=0, num_tokens=4))
    with pytest.raises(ValueError, match="changed the learned-token grid"):
        module.init(jax.random.key(0), jnp.ones((1, 3, 3, 8)), lambda g: g[:, :, :2], train=False)


def tl_config(**overrides):
    values = dict(enabled=True, stage=3, num_tokens=8, version="v1.1", use_fuser=False, bottleneck_dim=64)
    values.update(overrides)
    return ml_collections.ConfigDict(values)


def test_spec_from_config():
    assert stage_tokens.spec_from_config(None, 4) is None
    assert stage_tokens.spec_from_config(tl_config(enabled=False), 4) is None
    assert stage_tokens.spec_from_config(tl_config(use_fuser=True, bottleneck_dim=32), 4) == \
        stage_tokens.StageTokenSpec(stage=3, num_tokens=8, version="v1.1", use_fuser=True, bottleneck_dim=32)


@pytest.mark.parametrize("override, message", [
    (dict(stage=4), "token_learner.stage=4"),
    (dict(stage=-1), "token_learner.stage=-1"),
    (dict(num_tokens=0), "token_learner.num_tokens=0"),
    (dict(version="v2"), "token_learner.version='v2'"),
])
def test_spec_from_config_names_the_bad_field(override, message):
    with pytest.raises(ValueError, match=message):
        stage_tokens.spec_from_config(tl_config(**override), 4)
