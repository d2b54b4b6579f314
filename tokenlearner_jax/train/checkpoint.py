"""orbax checkpoints of the train state together with every process's input-pipeline position.

A checkpoint at step N holds `state` (the sharded TrainState) and `data` (one JSON file per process
with its iterator state, written by grain's checkpoint handler), so a resumed run sees exactly the
batches the uninterrupted run would have seen.
"""

import json
import logging

import jax
import orbax.checkpoint as ocp
from grain import checkpoint as grain_checkpoint


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
        self.manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=("state", "data"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state, iterator_state: dict, *, force: bool = False) -> bool:
        saved = self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain_checkpoint.CheckpointSave(IteratorSnapshot(iterator_state))), force=force)
        if saved:
            logging.info("Checkpoint of step %d requested.", step)
        return saved

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
        self.manager.wait_until_finished()

    def close(self):
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)
