"""SIGTERM / SIGINT at any moment: exit EXIT_PREEMPTED (75) with one documented line.

Two regimes, one handler:
  immediate  (from `install()` until the loop starts, and again after it ends) the handler exits on
             the spot: it runs the callbacks registered with `at_exit` (the workdir lock's release),
             prints the line, naming the last intact checkpoint if any, and calls os._exit(75).
             Start-up (imports, data, compilation, restore) has nothing to save. Raising an exception
             from the handler instead is not reliable: a signal that lands while the garbage
             collector runs a callback (jax has one) or inside a __del__ has its exception printed
             and dropped, and start-up goes on as if nothing happened.
  deferred   (inside `with guard.deferred():`, around the training loop and the last checkpoint's
             close) the handler only records the signal; the loop polls `guard.requested()` every
             step, checkpoints the finished step and raises `Preempted(step, signal_name)`, which
             main.py turns into the line and exit 75 (`exit_on_preemption`). A signal recorded after
             the loop's last poll raises `Preempted` when the block ends.
`Preempted` is a BaseException, like KeyboardInterrupt, so that no `except Exception` on the way up
mistakes it for an error; `finally` blocks still run.

How main.py and the loop call it:
  main.py, before any other import of ours or of jax:
      from tokenlearner_jax.train import preemption
      guard = preemption.install()
  main.py, once the workdir is known:   guard.watch_checkpoints(os.path.join(workdir, "checkpoints"))
  main.py, around everything else:      preemption.exit_on_preemption(lambda: app.run(main))
  after taking the workdir lock:        guard.at_exit(lock.release)
  the loop:
      with guard.deferred():
          for step in ...:
              ...
              if guard.requested():          # a collective in multi-process runs: all stop together
                  ckpt.save(step, ..., extra={"train_window": window.to_json()}); ckpt.wait()
                  raise preemption.Preempted(step, guard.signal_name)
          ckpt.close()                       # the last write finishes before a signal can end the run
In a multi-process run a signal during start-up stops only the processes that receive it (SLURM
signals all of them); the others stop at their next collective (jax.distributed's heartbeat).
"""

import contextlib
import os
import signal
import sys

# EX_TEMPFAIL from sysexits.h: "temporary failure, the job can be retried" — schedulers can requeue on it.
EXIT_PREEMPTED = 75
MESSAGE_PREFIX = "tokenlearner_jax: "


def committed_steps(checkpoint_dir: str | None) -> list[int]:
    """Steps of the committed checkpoints in `checkpoint_dir` (orbax renames a finished write to its
    step number, so a directory named by digits is complete), oldest first."""
    if not checkpoint_dir or not os.path.isdir(checkpoint_dir):
        return []
    return sorted(int(name) for name in os.listdir(checkpoint_dir) if name.isdigit())


class Preempted(BaseException):
    """A signal stopped the run. With `step`, the checkpoint of `step` has been written; without, the
    run stopped during start-up (or after the loop) and `last_checkpoint` is the newest intact one."""

    def __init__(self, step: int | None, signal_name: str, last_checkpoint: int | None = None):
        if step is not None:
            message = (f"preempted by {signal_name}: checkpoint of step {step} written; "
                       f"rerun the same command to resume")
        else:
            kept = (f"the checkpoint of step {last_checkpoint} is intact" if last_checkpoint is not None
                    else "no checkpoint exists yet")
            message = (f"preempted by {signal_name} outside the training steps: no new checkpoint written "
                       f"({kept}); rerun the same command to resume")
        super().__init__(message)
        self.step = step
        self.signal_name = signal_name


class PreemptionGuard:
    """The process's handler of SIGTERM / SIGINT (`install()` makes the process's guard, immediate
    until `deferred()`; a guard made directly starts deferred, as the trainer before the task-agnostic
    loop expects)."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGINT), *, deferred: bool = True):
        self.signal_name = ""
        self._deferred = deferred
        self._checkpoint_dir = None
        self._at_exit = []
        self._previous = {sig: signal.signal(sig, self._handle) for sig in signals}

    def watch_checkpoints(self, checkpoint_dir: str):
        """Where the message of a start-up preemption looks for the last intact checkpoint."""
        self._checkpoint_dir = checkpoint_dir

    def at_exit(self, callback):
        """`callback()` runs before an immediate exit (e.g. the workdir lock's release)."""
        self._at_exit.append(callback)

    def _outside_the_steps(self) -> Preempted:
        steps = committed_steps(self._checkpoint_dir)
        return Preempted(None, self.signal_name, last_checkpoint=steps[-1] if steps else None)

    def _exit_now(self):
        for callback in reversed(self._at_exit):
            try:
                callback()
            except Exception:  # noqa: BLE001 -- exiting anyway; the message below matters more
                pass
        sys.stdout.flush()
        print(f"{MESSAGE_PREFIX}{self._outside_the_steps()}", file=sys.stderr, flush=True)
        os._exit(EXIT_PREEMPTED)

    def _handle(self, signum, frame):
        del frame
        name = signal.Signals(signum).name
        first = not self.signal_name
        self.signal_name = self.signal_name or name
        if not self._deferred:
            self._exit_now()
        if first:
            print(f"{MESSAGE_PREFIX}received {name}: stopping after the current step.", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def deferred(self):
        """Signals are recorded, for `requested()`, while the block runs."""
        previous, self._deferred = self._deferred, True
        try:
            yield self
        finally:
            self._deferred = previous
        if self.signal_name and not previous:
            raise self._outside_the_steps()

    def requested(self) -> bool:
        """True on every process if any process received a signal (a collective when several run)."""
        stop = any_process([bool(self.signal_name)])[0]
        if stop and not self.signal_name:
            self.signal_name = "a signal to another process"
        return stop

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def any_process(flags) -> list[bool]:
    """[flag is true on some process] for each of `flags`: one small collective for all of them, none
    in a one-process run (e.g. a stop request and a failed save, agreed on in the same step)."""
    flags = [bool(flag) for flag in flags]
    import jax  # here, not at the top: install() must not wait for jax to import

    if jax.process_count() == 1:
        return flags
    import numpy as np
    from jax.experimental import multihost_utils

    gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32))
    return [bool(x) for x in np.asarray(gathered).reshape(-1, len(flags)).any(axis=0)]


_GUARD: PreemptionGuard | None = None


def installed() -> PreemptionGuard | None:
    """The guard `install()` made, or None (the trainer called in-process, e.g. from a test)."""
    return _GUARD


def install() -> PreemptionGuard:
    """Installs the handler (once per process) and returns it. Call first thing in main.py."""
    global _GUARD
    if _GUARD is None:
        _GUARD = PreemptionGuard(deferred=False)
    return _GUARD


def exit_on_preemption(run):
    """Calls `run()`; on `Preempted`, prints its one line to stderr and exits EXIT_PREEMPTED."""
    try:
        return run()
    except Preempted as stop:
        print(f"{MESSAGE_PREFIX}{stop}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PREEMPTED)
