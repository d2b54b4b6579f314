"""Logical axis names for parameters and activations, and the default rules that map them to a mesh.

Every parameter of our layers is created with logical axis names (e.g. ``("embed", "mlp")`` for the
first MLP kernel); the trainer turns them into mesh shardings with a list of rules. Layers only name
axes; which mesh axis shards them is the trainer's (and the config's) choice.
"""

from typing import Sequence

import flax.linen as nn

# (logical axis, mesh axes). Mesh axes absent from the mesh are dropped by the trainer.
DEFAULT_RULES: tuple = (
    ("batch", ("data", "fsdp")),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("kv", None),
    ("classes", None),
    ("length", None),
    ("tokens", None),
    ("conv_in", None),
    ("patch_h", None),
    ("patch_w", None),
)


def param_with_axes(init, axes: Sequence[str | None]):
    """Wraps an initializer so the parameter carries logical axis names (one per dimension)."""
    return nn.with_logical_partitioning(init, tuple(axes))


def constrain_batch(x):
    """Constrains an activation `[batch, ...]` to be sharded along the batch axis only."""
    return nn.with_logical_constraint(x, ("batch",) + (None,) * (x.ndim - 1))
