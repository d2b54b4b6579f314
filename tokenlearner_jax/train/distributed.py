"""Multi-process start-up: jax.distributed from flags, or from the cluster's environment."""

import logging
import os

import jax

# Variables that mean "this process is one of several": SLURM, TPU pod slices, explicit JAX settings.
_CLUSTER_HINTS = ("JAX_COORDINATOR_ADDRESS", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def _slurm_multi_process() -> bool:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ


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
    elif _slurm_multi_process() or any(name in os.environ for name in _CLUSTER_HINTS):
        jax.distributed.initialize(initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    else:
        return
    logging.info("jax.distributed: process %d of %d, %d local / %d global devices", jax.process_index(),
                 jax.process_count(), jax.local_device_count(), jax.device_count())
