"""Multi-process start-up: jax.distributed from flags, or from the cluster's environment."""

import logging
import os

import jax

from tokenlearner_jax.train import mesh

# Variables that mean "this process is one of several": SLURM, TPU pod slices, explicit JAX settings.
_CLUSTER_HINTS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


# The CPU as this many jax devices in a single-process run, by default (`cpu_device_count`).
AUTO_CPU_DEVICES = 2


def _slurm_multi_process() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ


def multi_process(coordinator_address: str = "") -> bool:
    """Whether this process is one of several (flags, SLURM or a TPU pod slice's environment)."""
    return bool(coordinator_address) or _slurm_multi_process() or any(name in os.environ for name in _CLUSTER_HINTS)


def cpu_device_count(config, requested: int, cores: int) -> int:
    """How many jax devices a single-process run makes of the host's CPU: `requested` where it is > 0;
    else `AUTO_CPU_DEVICES` where the host has that many cores and the batch sizes split over that many
    devices (config.batch_size / grad_accum_steps and config.eval_batch_size), else 1.

    Why: XLA gives attention's batched matrix products to YNNPACK, which runs each on one thread; with the
    train step data-parallel over two devices, each device's program keeps a core busy. Measured on 2
    cores (docs/performance.md): ViT-S/16's train step 1.10x as fast as on one device, at 1.07x the peak
    RSS with the optimizer state split over the two (config.shard_optimizer_state), still under timm's.
    Not measured on more cores: there the default stays at two."""
    if requested > 0:
        return requested
    if cores < AUTO_CPU_DEVICES:
        return 1
    try:
        mesh.validate_batch_sizes(config, AUTO_CPU_DEVICES, process_count=1)
    except ValueError:
        return 1
    return AUTO_CPU_DEVICES


def split_cpu(config, requested: int, coordinator_address: str = "") -> int:
    """Makes the CPU `cpu_device_count` jax devices (before jax starts its backends) and returns that count;
    0, changing nothing, in a multi-process run (launch.py sets its processes' count) or where XLA_FLAGS
    or JAX_NUM_CPU_DEVICES already set it."""
    if (multi_process(coordinator_address) or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", "")
            or "JAX_NUM_CPU_DEVICES" in os.environ):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    count = cpu_device_count(config, requested, cores)
    jax.config.update("jax_num_cpu_devices", count)
    return count


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
               initialization_timeout: int = 300, heartbeat_timeout_seconds: int = 120) -> None:
    """Initialises jax.distributed when this is a multi-process job; a no-op for one process.

    With `coordinator_address` (host:port), `num_processes` and `process_id` given, they are used
    as they are (e.g. several processes on one machine). Otherwise jax's own cluster detection
    reads SLURM or TPU-pod environments when one of them says there are several processes.
    If a process stops answering for `heartbeat_timeout_seconds`, the others stop with an error
    naming it instead of waiting in a collective forever.
    """
    if coordinator_address:
        if num_processes <= 0 or process_id < 0:
            raise ValueError("--coordinator_address needs --num_processes > 0 and --process_id >= 0")
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=num_processes,
                                   process_id=process_id, initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    elif multi_process():
        jax.distributed.initialize(initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    else:
        return
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
