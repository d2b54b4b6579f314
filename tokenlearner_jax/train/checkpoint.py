"""orbax checkpoints of the train state and every process's input position, verified when restored.

A checkpoint at step N is one atomic orbax commit of three items:
  state     the sharded train state (StandardSave);
  data      one JSON file per process with its iterator state (grain's handler), for exact resume;
  manifest  shape, dtype and checksum of every state leaf, the SHA-256 of every process's iterator
            file, and `extra` (JSON the loop wants back, e.g. the pending training metrics), sealed
            by its own SHA-256 (train/integrity.py says why checksums of values).

Restoring tells two failures apart:
  damage    (CheckpointDamagedError) the checkpoint does not restore, or restores to values other
            than the ones saved: quarantine it (moved to `damaged_checkpoints/`, never deleted) and
            fall back to the previous one;
  mismatch  (CheckpointMismatchError) an intact checkpoint of a differently shaped state (the config
            changed) or of another process count: nothing is moved; the run must stop and say so.
A restore that fails for a reason unrelated to the files (memory, a transient I/O error) raises
CheckpointReadError and moves nothing either.

How the loop calls it (in this order):
  check_writable(workdir)                                   # before anything else is written
  ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.keep_checkpoints,
                      async_save=config.async_checkpointing, verbose=FLAGS.verbose)
  restored = ckpt.restore_latest(abstract_state, os.path.join(workdir, "damaged_checkpoints"))
      # -> Restored(step, state, iterator_state, extra) of the newest intact checkpoint, or None;
      #    raises CheckpointMismatchError or CheckpointReadError (print its one line, exit non-zero)
  if restored: train_iter.set_state(restored.iterator_state)
  every step:   ckpt.raise_if_save_failed()     # cheap; CheckpointWriteError one step after a failed
                                                # asynchronous write, naming the last intact step
  to save:      ckpt.save(step, state, train_iter.get_state(), extra={...})
                # raises NonFiniteStateError (nothing written) if any floating leaf holds NaN/Inf
  at the end:   ckpt.close()                    # waits for the last write; raises CheckpointWriteError
  evaluation of a finished run:  ckpt.load(ckpt.latest_step(), abstract_state, with_data=False).state
In a multi-process run every process makes the same calls; `failed_save()` is the per-process,
non-raising form of the per-step check, for a loop that agrees on stopping through one collective.
"""

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from grain import checkpoint as grain_checkpoint
from jax.experimental import multihost_utils

from tokenlearner_jax.train import integrity

ITEMS = ("state", "data", "manifest")


class CheckpointWriteError(RuntimeError):
    """A checkpoint could not be written; the message names the step, the directory and the last good step."""


class CheckpointDamagedError(RuntimeError):
    """A checkpoint that does not restore to what was saved."""


class CheckpointReadError(RuntimeError):
    """A restore failed for a reason that says nothing about the files (memory, a transient I/O error,
    a target without shardings): nothing is moved, the run stops."""


class CheckpointMismatchError(ValueError):
    """An intact checkpoint whose state has other leaves, shapes or dtypes than the requested one."""


class NonFiniteStateError(FloatingPointError):
    """The state to save holds NaN or Inf; nothing was written."""


@dataclasses.dataclass
class Restored:
    """A verified checkpoint: its step, the train state, this process's iterator state (None when
    restored without it) and the loop's `extra` JSON ({} for checkpoints written before manifests)."""

    step: int
    state: Any
    iterator_state: dict | None
    extra: dict


class IteratorSnapshot:
    """The iterator state captured when a save is requested, in the form grain's handler writes.

    Saving a snapshot rather than the live iterator keeps an asynchronous save from recording a
    position the training loop has already moved past. `raw` holds the exact bytes written or read,
    whose SHA-256 the manifest records.
    """

    def __init__(self, state: dict | None = None):
        self.state = state
        self.raw = json.dumps(state).encode() if state is not None else b""

    def get_state(self) -> bytes:
        return self.raw

    def set_state(self, state: bytes):
        self.raw = state
        self.state = json.loads(state)

    def start_prefetch(self):
        """Called by grain's handler after a restore; a snapshot has nothing to prefetch."""


class _QuietOrbaxErrors(logging.Filter):
    """Drops orbax's ERROR records (each with a traceback of 30-100 lines) about a failed write: the
    Checkpointer reports the failure itself in one line."""

    def filter(self, record):
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


def _quiet_orbax_leftovers():
    """Once per process: drops the unraisable exceptions that a failed orbax write leaves behind, each
    printed with a traceback: tensorstore completing writes into the closed event loop of the failed
    save ("Event loop is closed"), and orbax's unfinished write coroutines collected at exit."""
    previous = sys.unraisablehook
    if getattr(previous, "quiets_orbax", False):
        return

    def hook(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        leftover = code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename
        closed_loop = isinstance(unraisable.exc_value, RuntimeError) and str(unraisable.exc_value) == (
            "Event loop is closed")
        if not (leftover or closed_loop):
            previous(unraisable)

    hook.quiets_orbax = True
    sys.unraisablehook = hook


# Restore errors that do not mean damaged files.
_NOT_DAMAGE = ("Topology mismatch", "RESOURCE_EXHAUSTED", "UNAVAILABLE", "DEADLINE_EXCEEDED", "Out of memory")


def _kind(error: BaseException) -> type:
    if isinstance(error, MemoryError) or any(text in str(error) for text in _NOT_DAMAGE):
        return CheckpointReadError
    return CheckpointDamagedError


def _agree(problem: str | None, kind: type = CheckpointDamagedError):
    """Raises `kind`(problem) on every process when any process found a problem (one small collective;
    none for one process), so that all processes quarantine, stop or restore together; a
    CheckpointReadError anywhere wins over damage."""
    code = 0 if problem is None else (2 if kind is CheckpointReadError else 1)
    if jax.process_count() > 1:
        codes = np.asarray(multihost_utils.process_allgather(np.asarray([code], np.int32))).reshape(-1)
        if codes.max() > code:
            problem = f"process {int(np.argmax(codes))} could not read or verify it"
            code = int(codes.max())
    if code:
        raise (CheckpointReadError if code == 2 else CheckpointDamagedError)(problem)


def _problem(read):
    """(read(), None), or (None, the CheckpointDamagedError's message)."""
    try:
        return read(), None
    except CheckpointDamagedError as e:
        return None, str(e)


def _iterator_digests(snapshot: IteratorSnapshot) -> list[str]:
    """SHA-256 of every process's iterator file, in process order, on every process."""
    digest = integrity.sha256(snapshot.get_state())
    if jax.process_count() == 1:
        return [digest]
    gathered = multihost_utils.process_allgather(np.frombuffer(bytes.fromhex(digest), np.uint8))
    return [bytes(row).hex() for row in np.asarray(gathered).reshape(jax.process_count(), -1)]


def _arrays(count: int) -> str:
    return f"{count} array{'' if count == 1 else 's'}"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:400] if text else ''}"


class Checkpointer:
    """Saves (asynchronously if asked), keeps the last `keep`, verifies and resumes the latest intact."""

    def __init__(self, directory: str, *, keep: int, async_save: bool = True, verbose: bool = False):
        directory = os.path.abspath(directory)  # orbax needs absolute paths; workdirs are often relative
        self.directory = directory
        self.manager = ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=async_save,
                                                 create=True),
            item_names=ITEMS)
        self._pending = None  # step of a save whose outcome is not known yet
        self._failure = None  # message of a failed save, once reported
        self._quiet = None if verbose else _QuietOrbaxErrors()
        if self._quiet:  # a failed write is reported in one line; `verbose` keeps orbax's own reports
            logging.getLogger("absl").addFilter(self._quiet)
            _quiet_orbax_leftovers()

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Committed checkpoints, oldest first (a partial write is never listed)."""
        return sorted(self.manager.all_steps())

    def _last_intact(self, excluding: int | None = None) -> str:
        good = [s for s in self.all_steps() if s != excluding and os.path.isdir(self._step_dir(s))]
        return (f"the checkpoint of step {good[-1]} is intact and a rerun resumes from it" if good
                else "no earlier checkpoint exists, so a rerun starts afresh")

    def _step_dir(self, step: int) -> str:
        return os.path.join(self.directory, str(step))

    # Saving.

    def save(self, step: int, state, iterator_state: dict, *, extra: dict | None = None,
             force: bool = False) -> bool:
        """Requests the checkpoint of `step` (written in the background when asynchronous).

        Raises NonFiniteStateError, without writing anything, when a floating-point leaf of `state`
        holds NaN or Inf, and CheckpointWriteError when this or an earlier write failed."""
        self.raise_if_save_failed()
        leaves, nonfinite = integrity.describe(state)
        if nonfinite:
            raise NonFiniteStateError(
                f"step {step}: {_arrays(len(nonfinite))} of the state hold NaN or Inf ({', '.join(nonfinite[:5])}"
                f"{', ...' if len(nonfinite) > 5 else ''}); stopped without writing a checkpoint of the bad values "
                f"({self._last_intact()}). Lower the learning rate, or set config.skip_nonfinite_steps=True "
                f"to skip such steps.")
        snapshot = IteratorSnapshot(iterator_state)
        manifest = integrity.seal({"format": integrity.FORMAT, "step": int(step), "leaves": leaves,
                                   "iterators": _iterator_digests(snapshot), "extra": extra or {}})
        try:
            saved = self.manager.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain_checkpoint.CheckpointSave(snapshot),
                manifest=ocp.args.JsonSave(manifest)), force=force)
        except Exception as e:  # also reports a failed earlier asynchronous save
            earlier = self._pending is not None and not os.path.isdir(self._step_dir(self._pending))
            self._failure = self._write_failure(self._pending if earlier else step, e)
            raise CheckpointWriteError(self._failure) from e
        if saved:
            self._pending = step
            logging.info("Checkpoint of step %d requested.", step)
        return saved

    def failed_save(self) -> str | None:
        """The one-line message of a failed write, once the last requested save has ended without
        committing; None while it is running or after it committed. Cheap enough for every step."""
        if self._failure is not None:
            return self._failure
        if self._pending is None or self.manager.is_saving_in_progress():
            return None
        step, self._pending = self._pending, None
        if os.path.isdir(self._step_dir(step)):
            return None
        try:
            self.manager.wait_until_finished()  # returns at once; re-raises the background error
            error = RuntimeError("the write ended without committing")
        except Exception as e:
            error = e
        self._failure = self._write_failure(step, error)
        return self._failure

    def raise_if_save_failed(self):
        """Raises CheckpointWriteError when `failed_save()` has a message."""
        message = self.failed_save()
        if message:
            raise CheckpointWriteError(message)

    def _write_failure(self, step: int, error: BaseException) -> str:
        return (f"could not write the checkpoint of step {step} in {self.directory} ({_first_line(error)}); "
                f"{self._last_intact(excluding=step)}. Is the disk full or the directory unwritable?")

    def wait(self):
        """Blocks until the requested save has committed; CheckpointWriteError if it failed."""
        if self._failure is None:
            try:
                self.manager.wait_until_finished()
            except Exception as e:
                self._failure = self._write_failure(self._pending or self.manager.latest_step() or 0, e)
        self.raise_if_save_failed()

    def close(self):
        """Waits for the last write (CheckpointWriteError if it failed, unless already reported)."""
        try:
            if self._failure is None:
                self.wait()
        finally:
            try:
                self.manager.close()
            except Exception:
                if self._failure is None:
                    raise  # otherwise it is the failure reported already
            if self._quiet:
                logging.getLogger("absl").removeFilter(self._quiet)
                self._quiet = None

    # Restoring.

    def _manifest(self, step: int) -> dict | None:
        """The verified manifest of `step`, or None for a checkpoint written before manifests existed."""
        if not os.path.isdir(os.path.join(self._step_dir(step), "manifest")):
            if "manifest" in self._committed_items(step):
                raise CheckpointDamagedError("its manifest is missing")
            return None
        try:
            record = self.manager.restore(step, args=ocp.args.Composite(manifest=ocp.args.JsonRestore()))
            return integrity.unseal(record["manifest"])
        except Exception as e:
            raise CheckpointDamagedError(f"its manifest is unreadable ({_first_line(e)})") from e

    def _committed_items(self, step: int) -> set:
        """The items orbax's _CHECKPOINT_METADATA lists for `step` (empty when it cannot be read)."""
        try:
            with open(os.path.join(self._step_dir(step), "_CHECKPOINT_METADATA"), encoding="utf-8") as f:
                return set(json.load(f)["item_handlers"])
        except (OSError, ValueError, KeyError, TypeError):
            return set()

    def _saved_structure(self, step: int, manifest: dict | None) -> dict:
        if manifest is not None:
            return manifest["leaves"]
        try:  # an older checkpoint: orbax's own metadata says what it holds
            metadata = ocp.StandardCheckpointHandler().metadata(epath.Path(self._step_dir(step)) / "state")
            return integrity.leaf_specs(metadata)
        except Exception as e:
            raise CheckpointDamagedError(f"its array metadata is unreadable ({_first_line(e)})") from e

    def _saved_process_count(self, step: int, manifest: dict | None) -> int | None:
        """How many processes wrote the iterator states of `step` (None if unknown)."""
        if manifest is not None:
            return len(manifest["iterators"])
        names = os.listdir(os.path.join(self._step_dir(step), "data")) if os.path.isdir(
            os.path.join(self._step_dir(step), "data")) else []
        counts = {name.rsplit("-of-", 1)[1].split(".")[0] for name in names if "-of-" in name}
        return int(counts.pop()) if len(counts) == 1 and next(iter(counts)).isdigit() else None

    def load(self, step: int, abstract_state, *, with_data: bool = True) -> Restored:
        """The verified checkpoint of `step`. `abstract_state` holds ShapeDtypeStructs with the target
        shardings, so a checkpoint can be restored onto a different mesh. Raises
        CheckpointMismatchError (the state's structure differs) or CheckpointDamagedError."""
        manifest, problem = _problem(lambda: self._manifest(step))
        _agree(problem)
        saved, problem = _problem(lambda: self._saved_structure(step, manifest))
        _agree(problem)
        differences = integrity.structure_differences(saved, abstract_state)
        if differences:
            raise CheckpointMismatchError(
                f"the checkpoint of step {step} in {self.directory} holds a state of another shape than the "
                f"config builds ({len(differences)} arrays differ: {'; '.join(differences[:3])}"
                f"{'; ...' if len(differences) > 3 else ''}). Start afresh with a new --workdir, or restore "
                f"the config this workdir was trained with (its config.json).")
        writers = self._saved_process_count(step, manifest)
        if with_data and writers not in (None, jax.process_count()):
            raise CheckpointMismatchError(
                f"the checkpoint of step {step} in {self.directory} was written by {writers} processes and this "
                f"run has {jax.process_count()}: the input pipeline's position is per process and cannot be "
                f"carried over. Resume with {writers} processes, or start afresh with a new --workdir.")
        args = {"state": ocp.args.StandardRestore(abstract_state)}
        if with_data:
            args["data"] = grain_checkpoint.CheckpointRestore(IteratorSnapshot())
        restored, problem, kind = None, None, CheckpointDamagedError
        try:
            restored = self.manager.restore(step, args=ocp.args.Composite(**args))
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            problem, kind = f"it does not restore ({_first_line(e)})", _kind(e)
        _agree(problem, kind)
        snapshot = restored["data"] if with_data else None
        if manifest is not None:
            problem = self._verify(manifest, restored["state"], snapshot)
        _agree(problem)
        return Restored(step=step, state=restored["state"], iterator_state=snapshot.state if snapshot else None,
                        extra=manifest["extra"] if manifest else {})

    @staticmethod
    def _verify(manifest: dict, state, snapshot: IteratorSnapshot | None) -> str | None:
        described, _ = integrity.describe(state)
        changed = integrity.checksum_differences(manifest["leaves"], described)
        if changed:
            return (f"the checksums of {_arrays(len(changed))} differ from the ones saved "
                    f"({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''})")
        if snapshot is not None:
            if integrity.sha256(snapshot.get_state()) != manifest["iterators"][jax.process_index()]:
                return f"the iterator state of process {jax.process_index()} differs from the one saved"
        return None

    def quarantine(self, step: int, destination: str) -> str:
        """Moves a damaged checkpoint out of the way (never deletes it) and returns where it went."""
        target = os.path.join(destination, f"{step}-{int(time.time())}")
        if jax.process_index() == 0:
            os.makedirs(destination, exist_ok=True)
            shutil.move(self._step_dir(step), target)
        multihost_utils.sync_global_devices(f"quarantine checkpoint {step}")
        self.manager.reload()
        return target

    def restore_latest(self, abstract_state, quarantine_dir: str) -> Restored | None:
        """The newest intact checkpoint, or None when there is none. A damaged one is reported in one
        line, moved to `quarantine_dir` and the next older one is tried; CheckpointMismatchError (from
        the newest intact one) stops the search with nothing moved."""
        for step in reversed(self.all_steps()):
            try:
                restored = self.load(step, abstract_state)
            except CheckpointDamagedError as e:  # CheckpointReadError and mismatches stop the search
                moved = self.quarantine(step, quarantine_dir)
                logging.error("The checkpoint of step %d is damaged: %s; moved it to %s and falling back to an "
                              "older one.", step, e, moved)
                continue
            logging.info("Resumed from the checkpoint of step %d.", step)
            return restored
        return None


def check_writable(directory: str) -> None:
    """Write probe: creates `directory` and writes, syncs and removes a 1 MiB file, so a full disk or an
    unwritable workdir stops the run before any training. The probe is removed even when writing fails."""
    probe = os.path.join(directory, f".write_probe_{jax.process_index()}_{os.getpid()}")
    try:
        os.makedirs(directory, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * (1 << 20))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise OSError(f"workdir {directory} is not writable ({e.strerror or e}): checkpoints and metrics "
                      f"could not be saved; free some space or choose another --workdir") from e
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass


def abstract_with_shardings(tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree, shardings)


def read_state(checkpoint_dir: str, step: int | None = None) -> tuple[int, Any]:
    """(step, the train state of checkpoint `step`, by default the newest, as nested dicts of numpy arrays),
    whatever devices and layout wrote it (a run on two CPU devices holds half of its optimizer state on
    each): for reading a run from outside the trainer."""
    with ocp.CheckpointManager(os.path.abspath(checkpoint_dir), item_names=("state",),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        step = manager.latest_step() if step is None else step
        if step is None or step not in manager.all_steps():
            raise FileNotFoundError(f"no checkpoint{'' if step is None else f' of step {step}'} in {checkpoint_dir}")
        tree = manager.item_metadata(step)["state"].tree
        restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=tree, restore_args=restore_args)))["state"]
    return step, restored
