"""Graceful stop on SIGTERM / SIGINT: finish the current step, checkpoint, exit with EXIT_PREEMPTED.

In a multi-process run the signal may reach the processes at different steps (or only some of
them); the flag is combined over all processes every step, so all of them stop after the same step.
"""

import logging
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

# EX_TEMPFAIL from sysexits.h: "temporary failure, the job can be retried" — schedulers can requeue on it.
EXIT_PREEMPTED = 75


class Preempted(Exception):
    """Raised by the trainer after it has written the checkpoint of `step`."""

    def __init__(self, step: int, signal_name: str):
        super().__init__(f"preempted by {signal_name}: checkpoint of step {step} written; "
                         f"rerun the same command to resume")
        self.step = step


class PreemptionGuard:
    """Records SIGTERM / SIGINT instead of dying; `requested()` says whether to stop now."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
        self.signal_name = ""
        self._previous = {}
        for sig in signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        del frame
        if not self.signal_name:
            logging.warning("Received %s: stopping after the current step.", signal.Signals(signum).name)
        self.signal_name = signal.Signals(signum).name

    def requested(self) -> bool:
        """True on every process if any process received a signal (a collective when several processes run)."""
        local = bool(self.signal_name)
        if jax.process_count() == 1:
            return local
        flags = multihost_utils.process_allgather(np.asarray([local], np.int32))
        if flags.any() and not self.signal_name:
            self.signal_name = f"a signal to process {int(np.argmax(np.asarray(flags).reshape(-1)))}"
        return bool(flags.any())

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
