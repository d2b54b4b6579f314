"""train/state_init.py: the state's initialisation traced once, its random draws made in batches, gives
bit for bit the state of the plain program, with fewer draws in it (the GAN task's two trees:
tests/test_gan_task.py)."""

import functools

import flax
import jax
import numpy as np
import pytest

from helpers import TINY, parse_config
from tokenlearner_jax.train import state_init, trainer


def key_operations(fn, rng):
    """How many random_bits and random_fold_in operations the jaxpr of fn(rng) holds (jit inlined)."""
    with jax.disable_jit():
        eqns = jax.make_jaxpr(fn)(rng).jaxpr.eqns
    names = [eqn.primitive.name for eqn in eqns]
    return names.count("random_bits"), names.count("random_fold_in")


def assert_same_leaves(actual, expected):
    assert jax.tree.structure(actual) == jax.tree.structure(expected)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(actual)[0], jax.tree.leaves(expected)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=jax.tree_util.keystr(path))


def draws(rng):
    """Draws of two shapes, one of them made from a key that depends on another draw's key."""
    first, second, third = jax.random.split(rng, 3)
    later = jax.random.split(jax.random.fold_in(first, 7))[0]
    out = {"a": jax.random.normal(first, (4, 5)), "b": jax.random.normal(second, (4, 5)),
           "c": jax.random.uniform(third, (3,)), "d": jax.random.normal(later, (4, 5)),
           "e": jax.random.bits(jax.random.fold_in(second, 3), (2, 2))}
    out["sum"] = out["a"] + out["d"]
    return out


def test_draws_of_one_shape_are_made_together_with_the_same_bits():
    rng = jax.random.key(3)
    batched, shape = state_init.trace(draws, rng)
    one_by_one = functools.partial(batched, batch_draws=False)
    expected = jax.jit(draws)(rng)
    assert_same_leaves(jax.jit(batched)(rng), expected)
    assert_same_leaves(jax.jit(one_by_one)(rng), expected)
    assert jax.tree.map(lambda s: (s.shape, s.dtype), shape) == jax.tree.map(lambda x: (x.shape, x.dtype), expected)
    assert key_operations(draws, rng) == (5, 2)
    assert key_operations(one_by_one, rng) == (5, 2)
    # a and b in one call; c, e (other shapes) on their own; d after fold_in(first), which waits on the split.
    # Both fold_ins (of first and of second) in one call.
    assert key_operations(batched, rng) == (4, 1)


def test_a_batch_holds_at_most_max_batch_values(monkeypatch):
    rng = jax.random.key(3)
    monkeypatch.setattr(state_init, "MAX_BATCH_VALUES", 20)  # one (4, 5) draw per call
    batched, _ = state_init.trace(draws, rng)
    assert key_operations(batched, rng) == (5, 1)
    assert_same_leaves(jax.jit(batched)(rng), jax.jit(draws)(rng))


@pytest.mark.parametrize("flags, draws_left", [
    ([*TINY, "--config.model.depth=4"], 0.5),  # four identical layers
    (["--config=configs/nest_digits.py", "--config.batch_size=32"], 0.7),  # levels of other widths
], ids=["vit_token_learner", "nest"])
def test_setup_initialises_the_plain_programs_state_with_fewer_draws(flags, draws_left):
    """Setup's initialisation (one device: draws batched) against the task's own init_state, jitted;
    at most draws_left of the draws are left as calls of their own."""
    config = parse_config(flags)
    setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=1)
    rng = jax.random.key(config.seed)
    with setup.context():
        plain = jax.jit(lambda rng: flax.core.meta.unbox(setup.task.init_state(rng)),
                        out_shardings=setup.state_shardings)(rng)
        batched, abstract = state_init.trace(setup.task.init_state, rng)
        bits, fold_ins = key_operations(setup.task.init_state, rng)
        batched_bits, batched_fold_ins = key_operations(batched, rng)
    assert_same_leaves(setup.init_state(), plain)
    assert jax.tree.map(lambda s: s.shape, flax.core.meta.unbox(abstract)) == jax.tree.map(np.shape, plain)
    assert bits >= 8 and batched_bits <= bits * draws_left, (bits, batched_bits)
    assert batched_fold_ins <= fold_ins // 2, (fold_ins, batched_fold_ins)
