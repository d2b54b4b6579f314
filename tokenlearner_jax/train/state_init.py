"""The train state's initialisation, traced once, with its random draws made in batches.

Flax draws every parameter with a `jax.random` call of its own, and on CPU XLA compiles each call's
threefry hash as a loop of its own: 204 loops for ViViT-B/16x2 + TokenLearner, and compiling them was
most of the state's initialisation time (as long as compiling its train step). Threefry hashes every
element on its own, so the draws of one shape whose keys do not depend on one another can be made by
one call, vmapped over their stacked keys, with the same bits. `trace` evaluates the initialisation's
jaxpr in waves: it runs what it can, holds back the key operations (`KEY_PRIMITIVES`), and when nothing
else can run, makes each group of held-back operations of one kind and shape in one call. The state is
bit for bit the one of the plain program (tests/test_state_init.py); the initialisation compiles in a half
to two-thirds of the time (lever batched_random_draws in experiments/results/levers.md).
"""

import collections

import jax
import jax.numpy as jnp
from jax.extend import core as jax_core

# Primitives on keys whose call vmapped over stacked keys gives each key's own result, bit for bit.
KEY_PRIMITIVES = frozenset({"random_bits", "random_fold_in", "random_split"})
# The most values one batched call returns (16 MiB of 32-bit random bits): larger groups are made in
# several calls, so that the initialisation's temporary buffer grows little (ViViT-B/16x2 + TokenLearner:
# 0.46 -> 0.57 GB; without the cap, 0.91 GB).
MAX_BATCH_VALUES = 1 << 22


def trace(fn, rng):
    """Traces `fn(rng)` once; returns (a function (rng, batch_draws=True) -> fn(rng) to jit, the abstract
    shape of its output, as jax.eval_shape gives it). With batch_draws, the function makes fn's random draws
    in batches (see the module docstring); without, each draw is a call of its own, as in fn."""
    with jax.disable_jit():  # jax.random's jitted functions inlined, so that all draws sit in one jaxpr
        closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(rng)
    treedef = jax.tree.structure(out_shape)

    def replay(rng, batch_draws: bool = True):
        max_values = MAX_BATCH_VALUES if batch_draws else 0
        return jax.tree.unflatten(treedef, evaluate(closed, jax.tree.leaves(rng), max_values))
    return replay, out_shape


def evaluate(closed, args, max_batch_values: int):
    """The outputs of the closed jaxpr `closed` at `args`, its KEY_PRIMITIVES operations made in batches
    of at most max_batch_values output values (0: each on its own)."""
    jaxpr = closed.jaxpr
    env = dict(zip(jaxpr.constvars, closed.consts)) | dict(zip(jaxpr.invars, args))
    read = lambda var: var.val if isinstance(var, jax_core.Literal) else env[var]
    # Operations run as soon as their inputs exist (Kahn's order), key operations once nothing else can.
    waiting_on = collections.defaultdict(list)
    missing = []
    for index, eqn in enumerate(jaxpr.eqns):
        absent = {var for var in eqn.invars if not isinstance(var, jax_core.Literal) and var not in env}
        for var in absent:
            waiting_on[var].append(index)
        missing.append(len(absent))
    ready = collections.deque(index for index, count in enumerate(missing) if count == 0)
    held = []

    def record(index, outputs):
        for var, value in zip(jaxpr.eqns[index].outvars, outputs):
            env[var] = value
            for user in waiting_on.pop(var, ()):
                missing[user] -= 1
                if missing[user] == 0:
                    ready.append(user)

    while ready or held:
        if ready:
            index = ready.popleft()
            eqn = jaxpr.eqns[index]
            if max_batch_values and eqn.primitive.name in KEY_PRIMITIVES:
                held.append(index)
            else:
                record(index, _bind(eqn, [read(var) for var in eqn.invars]))
            continue
        for batch in _batches(jaxpr.eqns, held, max_batch_values):
            eqn = jaxpr.eqns[batch[0]]
            if len(batch) == 1:
                record(batch[0], _bind(eqn, [read(var) for var in eqn.invars]))
                continue
            stacked = [jnp.stack([read(jaxpr.eqns[index].invars[position]) for index in batch])
                       for position in range(len(eqn.invars))]
            outputs = jax.vmap(lambda *inputs: _bind(eqn, inputs))(*stacked)
            for row, index in enumerate(batch):
                record(index, [output[row] for output in outputs])
        held = []
    return [read(var) for var in jaxpr.outvars]


def _bind(eqn, inputs):
    """eqn's primitive applied to inputs, as a list of outputs."""
    with eqn.ctx.manager:
        outputs = eqn.primitive.bind(*inputs, **eqn.primitive.get_bind_params(eqn.params))
    return outputs if eqn.primitive.multiple_results else [outputs]


def _batches(eqns, indices, max_batch_values: int):
    """indices (into eqns) grouped by their operation's primitive, parameters and input shapes, in order
    of first appearance, each group cut into runs of at most max_batch_values output values."""
    groups = collections.defaultdict(list)
    for index in indices:
        eqn = eqns[index]
        kind = (eqn.primitive, tuple(sorted(eqn.params.items())), tuple(var.aval for var in eqn.invars))
        groups[kind].append(index)
    for members in groups.values():
        values = max(1, sum(var.aval.size for var in eqns[members[0]].outvars))
        per_batch = max(1, max_batch_values // values)
        for start in range(0, len(members), per_batch):
            yield members[start:start + per_batch]
