"""The device mesh from `config.mesh` and parameter shardings from logical axis rules."""

import math
from typing import Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tokenlearner_jax.layers.partitioning import DEFAULT_RULES

MESH_AXES = ("data", "fsdp", "model")


def mesh_shape(mesh_config, num_devices) -> dict:
    """Axis sizes from the config; one axis may be -1 for "all remaining devices". With `num_devices`
    None only the sizes themselves are checked."""
    sizes = {axis: int(mesh_config.get(axis, 1)) for axis in MESH_AXES}
    unknown = [axis for axis, size in sizes.items() if size == -1]
    if len(unknown) > 1:
        raise ValueError(f"config.mesh: at most one axis may be -1, got {unknown}")
    bad = {axis: size for axis, size in sizes.items() if size == 0 or size < -1}
    if bad:
        raise ValueError(f"config.mesh: axis sizes must be positive or -1, got {bad}")
    known = math.prod(size for size in sizes.values() if size != -1)
    if num_devices is None:
        return sizes
    if unknown:
        if num_devices % known:
            raise ValueError(f"config.mesh={sizes}: {num_devices} devices are not divisible by {known}")
        sizes[unknown[0]] = num_devices // known
    if math.prod(sizes.values()) != num_devices:
        raise ValueError(f"config.mesh={sizes} needs {math.prod(sizes.values())} devices, "
                         f"but {num_devices} are available")
    return sizes


def validate(mesh_config) -> None:
    """The mesh section without devices: known axes, sizes positive or -1 (at most one -1)."""
    unknown = sorted(set(mesh_config) - set(MESH_AXES))
    if unknown:
        raise ValueError(f"config.mesh: unknown axes {unknown}; the axes are {MESH_AXES}")
    mesh_shape(mesh_config, None)


def validate_batch_sizes(config, data_parallel: int, process_count: int) -> None:
    """Batch sizes must split evenly over the data-parallel devices and the processes."""
    micro_batch = config.batch_size // config.get("grad_accum_steps", 1)
    for field, value in (("batch_size", config.batch_size), ("eval_batch_size", config.eval_batch_size)):
        if value % process_count:
            raise ValueError(f"config.{field}={value}: expected a multiple of the {process_count} processes")
    if micro_batch % data_parallel:
        raise ValueError(f"config.batch_size={config.batch_size}: batch_size / grad_accum_steps = {micro_batch} "
                         f"must be a multiple of the {data_parallel} data-parallel devices (mesh data x fsdp)")
    if config.eval_batch_size % data_parallel:
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size}: expected a multiple of the "
                         f"{data_parallel} data-parallel devices (mesh data x fsdp)")


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


def split_over_data(sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """`sharding` of an array of `shape` with its outermost dimension that is not split yet (its mesh axes,
    if any, of size 1) and divides by the mesh's data axis split over that axis too; unchanged where no
    dimension qualifies, or the data axis is of size 1 or already used. What optimizer state is held as
    with `config.shard_optimizer_state`. The outermost, so that each device's share is one contiguous
    block for the step to slice and gather: ViT-B/16's step on two CPU devices took 8.97 s against 9.25 s
    with the largest dimension split instead (one process, interleaved; docs/performance.md)."""
    mesh_sizes = sharding.mesh.shape
    entries = [(() if entry is None else (entry,) if isinstance(entry, str) else tuple(entry))
               for entry in tuple(sharding.spec) + (None,) * (len(shape) - len(sharding.spec))]
    free = [dim for dim, size in enumerate(shape)
            if math.prod(mesh_sizes[axis] for axis in entries[dim]) == 1 and size % mesh_sizes["data"] == 0]
    if mesh_sizes["data"] == 1 or any("data" in entry for entry in entries) or not free:
        return sharding
    entries[free[0]] += ("data",)
    return NamedSharding(sharding.mesh, PartitionSpec(*(entry or None for entry in entries)))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays `[batch, ...]` split over the data-parallel axes (data and fsdp), replicated over model."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
