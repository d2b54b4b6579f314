"""orbax checkpoints of the train state together with every process's input-pipeline position.

A checkpoint at step N holds `state` (the sharded TrainState) and `data` (one JSON file per process
with its iterator state, written by grain's checkpoint handler), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

import json
import logging
import os
import shutil
import time

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint
from jax.experimental import multihost_utils


class IteratorSnapshot:
    """The iterator state captured when a save is requested, in the form grain's handler writes.

    Saving a snapshot rather than the live iterator keeps an asynchronous save from recording a
    position the training loop has already moved past.
    """

    def __init__(self, state: dict | None = None):
        self.state = state

    def get_state(self) -> bytes:
        return json.dumps(self.state).encode()

    def set_state(self, state: bytes):
        self.state = json.loads(state)

    def start_prefetch(self):
        """Called by grain's handler after a restore; a snapshot has nothing to prefetch."""


class Checkpointer:
    """Saves every `every_steps` (asynchronously if asked), keeps the last `keep`, resumes the latest."""

    def __init__(self, directory: str, *, keep: int, async_save: bool = True):
        directory = os.path.abspath(directory)  # orbax needs absolute paths; workdirs are often relative
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Committed checkpoints, oldest first (a partial write is never listed)."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, iterator_state: dict, *, force: bool = False) -> bool:
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain_checkpoint.CheckpointSave(IteratorSnapshot(iterator_state))), force=force)
        except Exception as e:  # also reports a failed earlier asynchronous save
            raise CheckpointWriteError(self._write_failure(step, e)) from e
        if saved:
            logging.info("Checkpoint of step %d requested.", step)
        return saved

    def _write_failure(self, step: int, error: Exception) -> str:
        good = self.all_steps()
        kept = f"the checkpoint of step {good[-1]} is intact" if good else "no earlier checkpoint exists"
        return (f"could not write the checkpoint of step {step} (or finish an earlier one) in {self.directory}: "
                f"{type(error).__name__}: {error}; {kept}. Is the disk full or the directory unwritable?")

    def quarantine(self, step: int, destination: str) -> str:
        """Moves a damaged checkpoint out of the way (never deletes it) and returns where it went."""
        target = os.path.join(destination, f"{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.makedirs(destination, exist_ok=True)
            shutil.move(os.path.join(self.directory, str(step)), target)
        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
        self.manager.reload()
        return target

    def restore(self, step: int, abstract_state):
        """(state, iterator_state) of `step`; `abstract_state` holds ShapeDtypeStructs with the target
        shardings, so a checkpoint can be restored onto a different mesh."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=grain_checkpoint.CheckpointRestore(IteratorSnapshot())))
        return restored["state"], restored["data"].state

    def restore_state(self, step: int, abstract_state):
        """Only the train state of `step` (for evaluation of a finished run)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
        return restored["state"]

    def wait(self):
        try:
            self.manager.wait_until_finished()
        except Exception as e:
            raise CheckpointWriteError(self._write_failure(self.manager.latest_step() or 0, e)) from e

    def close(self):
        self.wait()
        self.manager.close()


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names the step, the directory and the last good step."""


def check_writable(directory: str) -> None:
    """Write probe: creates `directory` and writes, syncs and removes a 1 MiB file, so a full disk or an
    unwritable workdir stops the run before any training."""
    probe = os.path.join(directory, f".write_probe_{jax.process_index()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as e:
        raise OSError(f"workdir {directory} is not writable ({e.strerror or e}): checkpoints and metrics "
                      f"could not be saved; free some space or choose another --workdir") from e


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
