"""The device mesh from `config.mesh` and parameter shardings from logical axis rules."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tokenlearner_jax.layers.partitioning import DEFAULT_RULES

MESH_AXES = ("data", "fsdp", "model")


def mesh_shape(mesh_config, num_devices: int) -> dict:
    """Axis sizes from the config; one axis may be -1 for "all remaining devices"."""
    sizes = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
    unknown = [axis for axis, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {unknown}")
    bad = {axis: size for axis, size in sizes.items() if size == 0 or size < -1}
    if bad:
        raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {bad}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if unknown:
        if num_devices % known:
            raise ValueError(f"config.mesh={sizes}: {num_devices} devices are not divisible by {known}")
        sizes[unknown[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"config.mesh={sizes} needs {math.prod(sizes.values())} devices, "
                         f"but {num_devices} are available")
    return sizes


def make_mesh(mesh_config, devices: Sequence = None) -> Mesh:
    devices = list(devices if devices is not None else jax.devices())
    sizes = mesh_shape(mesh_config, len(devices))
    device_array = np.asarray(devices).reshape([sizes[axis] for axis in MESH_AXES])
    return Mesh(device_array, MESH_AXES)


def logical_rules(config_rules=()) -> tuple:
    """The rules of the config (a sequence of (logical name, mesh axes)) or the default ones."""
    return tuple(tuple(rule) for rule in config_rules) if config_rules else DEFAULT_RULES


def shardings_for(abstract_tree, mesh: Mesh, rules):
    """NamedShardings for a tree of (possibly Partitioned-boxed) abstract values."""
    specs = nn.get_partition_spec(abstract_tree)
    return nn.logical_to_mesh_sharding(specs, mesh, rules)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays `[batch, ...]` split over the data-parallel axes (data and fsdp), replicated over model."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
