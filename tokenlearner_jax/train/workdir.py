"""The workdir of a run: one run at a time (a lock), no resume under another config, no torn files.

How main.py / the loop call it, in this order (all processes make the same calls):
  checkpoint.check_writable(workdir)
  lock = workdir.acquire_for_run(workdir)        # WorkdirBusyError: another live run holds it
  if lock: guard.at_exit(lock.release)           # a signal during start-up exits at once (preemption.py)
  try:
      workdir.check_config(workdir, config, allow_change=FLAGS.allow_config_change)   # ConfigChangedError
      ... build the state, restore the latest checkpoint (a mismatch stops here, config.json untouched) ...
      workdir.write_config(workdir, config)      # config.json, replaced in one rename
      ... MetricsLog, train ...
  finally:
      if lock: lock.release()                    # idempotent
main.py prints the one-line message of WorkdirBusyError / ConfigChangedError and exits non-zero.
`--allow_config_change` (proposed flag, main.py): "resume although config.json differs in fields
that shape the train state or the data order; the checkpoint must still fit the new state".

The lock (`<workdir>/run.lock`) and the file-system semantics it relies on:
- Creation with open(O_CREAT | O_EXCL) is atomic: of two runs, one creates the file and the other
  gets FileExistsError. POSIX guarantees it on local file systems, Lustre and GPFS; on NFS it holds
  for NFSv3 and later (Linux 2.6+: open(2), "O_EXCL"), which is what clusters mount. Object-store
  mounts (gcsfuse, s3fs) do not make it atomic: do not share a workdir there between runs.
- rename() is atomic on POSIX and on NFS (a single server operation), so taking over a stale lock
  renames it aside under a name only this process uses, checks that the file moved is the one judged
  stale, and only then creates a new lock; of two runs taking over at once, one wins.
- Only process 0 of a multi-process run takes the lock (the processes share one workdir); it
  broadcasts the outcome, so every process refuses or proceeds together.
- Staleness. The holder writes its host, process id, the kernel boot id, its pid namespace and its
  start time. On the same host (same boot, same pid namespace) a lock whose process is gone, or
  whose process id now belongs to a later process, is stale at once, so a run killed with -9 and
  restarted resumes immediately. From another host, liveness is the heartbeat: the holder touches
  the lock's mtime every `heartbeat_every` seconds (30), and the lock is stale once its mtime is
  older than `stale_after` (180 s). That compares the holder's (or the NFS server's) clock with ours,
  and NFS caches attributes for up to 60 s (acregmax): keep stale_after well above both the clock
  skew of the cluster (NTP keeps it under a second) and the attribute cache.
- The heartbeat thread checks that the lock still holds this run's token; if not (someone deleted or
  took it), `lock.lost` turns true and an error is logged once.

The config check compares the workdir's config.json with the new config, field by field, and
refuses when a field that shapes the train state or the data order differs. IGNORED_FIELDS lists
the fields that do not (logging, evaluation, checkpoint cadence, few-shot, mesh, input threads, run
length); a changed run length (num_train_steps / num_epochs) extends or shortens a run, and the
learning-rate schedule is recomputed for the new length. Fields that exist on one side only (added
or removed by a newer version of the code) are logged, not refused: the checkpoint's own structure
check (checkpoint.CheckpointMismatchError) still stops a resume that does not fit.
"""

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid

import numpy as np

from tokenlearner_jax.train.preemption import committed_steps

CONFIG_FILE = "config.json"
LOCK_FILE = "run.lock"

# Fields whose change leaves the train state's structure and the order of training data as they were.
IGNORED_FIELDS = (
    "log_every_steps", "eval_every_steps", "checkpoint_every_steps", "keep_checkpoints", "async_checkpointing",
    "num_train_steps", "num_epochs",  # extending a run; the schedule follows the new length
    "eval_batch_size", "dataset.eval_split", "dataset.eval_crop_fraction", "dataset.eval_spatial_views",
    "dataset.eval_temporal_views", "dataset.synthetic_eval_size",  # evaluation only
    "fewshot.*",  # few-shot evaluation only
    "init_from.*",  # read by a run that starts from step 0 only
    "mesh.*", "sharding_rules", "shard_optimizer_state",  # a checkpoint restores onto another layout
    "dataset.num_workers",  # reading threads; the order does not depend on them
    "dataset.data_dir",  # the same data moved elsewhere
)


class ConfigChangedError(ValueError):
    """The workdir's checkpoints were written under a config that differs in state-shaping fields."""


class WorkdirBusyError(RuntimeError):
    """Another live run holds the workdir's lock."""


def write_atomically(path: str, text: str):
    """Replaces `path` by `text` in one rename: a reader, a kill or a full disk leaves the old or the
    new file, never a truncated one."""
    temporary = f"{path}.tmp-{os.getpid()}"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


# The config check.

def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _as_json(config) -> dict:
    """The config as config.json holds it (tuples as lists, and so on)."""
    return json.loads(config.to_json_best_effort(sort_keys=True))


def _ignored(field: str) -> bool:
    return any(field == pattern or (pattern.endswith(".*") and field.startswith(pattern[:-1]))
               for pattern in IGNORED_FIELDS)


def config_changes(workdir: str, config) -> tuple[list, list, list]:
    """([(field, old, new)] that matter, [...] that are ignored, [(field, old, new)] present on one
    side only) between `workdir`/config.json and `config`; all empty without a config.json."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return [], [], []
    with open(path, encoding="utf-8") as f:
        old = _flatten(json.load(f))
    new = _flatten(_as_json(config))
    missing = "<absent>"
    changed = [(field, old.get(field, missing), new.get(field, missing)) for field in sorted(set(old) | set(new))
               if old.get(field, missing) != new.get(field, missing)]
    one_sided = [c for c in changed if missing in (c[1], c[2])]
    two_sided = [c for c in changed if missing not in (c[1], c[2])]
    return ([c for c in two_sided if not _ignored(c[0])], [c for c in two_sided if _ignored(c[0])], one_sided)


def _describe(changes) -> str:
    return "; ".join(f"{field}: {old!r} -> {new!r}" for field, old, new in changes)


def check_config(workdir: str, config, *, allow_change: bool = False, checkpoint_dir: str | None = None):
    """Raises ConfigChangedError (one line) when `workdir` holds committed checkpoints written under a
    config.json that differs from `config` in a field outside IGNORED_FIELDS, unless `allow_change`
    (then the differences are logged as a warning). Without checkpoints there is nothing to resume."""
    steps = committed_steps(checkpoint_dir or os.path.join(workdir, "checkpoints"))
    if not steps:
        return
    try:
        changed, ignored, one_sided = config_changes(workdir, config)
    except ValueError as e:  # config.json is replaced in one rename, so only an outside hand gets here
        changed, ignored, one_sided = [("config.json", f"unreadable ({e})", "the new config")], [], []
    if ignored:
        logging.info("Config changed since the last run in fields that keep the train state: %s", _describe(ignored))
    if one_sided:
        logging.warning("Config fields present on one side only (a newer version of the code?): %s",
                        _describe(one_sided))
    if not changed:
        return
    if allow_change:
        logging.warning("Resuming the checkpoint of step %d under a changed config (--allow_config_change): %s",
                        steps[-1], _describe(changed))
        return
    raise ConfigChangedError(
        f"workdir {workdir} holds checkpoints (latest: step {steps[-1]}) of another config: {_describe(changed)}. "
        f"To start afresh, choose a new --workdir; to resume this one with the new values, add "
        f"--allow_config_change (the checkpoint must still fit the new state).")


def write_config(workdir: str, config):
    """Writes config.json (process 0) in one rename; a different earlier one is kept as
    config-<UTC time>.json."""
    import jax

    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, CONFIG_FILE)
    text = config.to_json_best_effort(indent=2, sort_keys=True)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            previous = f.read()
        if previous == text:
            return
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        write_atomically(os.path.join(workdir, f"config-{stamp}.json"), previous)
    write_atomically(path, text)


# The lock.

def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip()
    except OSError:
        return ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _this_process() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "boot_id": _read_first_line(
        "/proc/sys/kernel/random/boot_id"), "pid_namespace": _pid_namespace(), "start_ticks": _start_ticks(
        os.getpid()), "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex}


def _read_lock(path: str):
    """(holder dict or None when unreadable, seconds since its last heartbeat); FileNotFoundError if gone."""
    age = time.time() - os.stat(path).st_mtime
    try:
        with open(path, encoding="utf-8") as f:
            holder = json.load(f)
        return (holder if isinstance(holder, dict) and "token" in holder else None), age
    except (OSError, ValueError):
        if not os.path.exists(path):
            raise FileNotFoundError(path)
        return None, age


def _same_machine(holder: dict, me: dict) -> bool:
    return all(holder.get(key) == me[key] for key in ("host", "boot_id", "pid_namespace"))


def _process_alive(pid: int, start_ticks) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    return start_ticks is None or _start_ticks(pid) in (None, start_ticks)


def _stale_reason(holder, age: float, me: dict, stale_after: float) -> str | None:
    """Why the lock can be taken over, or None while its holder may be alive."""
    if holder is None:
        return f"an unreadable lock untouched for {age:.0f} s" if age > stale_after else None
    if _same_machine(holder, me):
        if not _process_alive(int(holder["pid"]), holder.get("start_ticks")):
            return f"process {holder['pid']} on this host has exited"
        return None
    if holder.get("host") == me["host"] and holder.get("boot_id") != me["boot_id"] and me["boot_id"]:
        return "this host has restarted since it was taken"
    if age > stale_after:
        return f"its last heartbeat, from host {holder.get('host')}, was {age:.0f} s ago"
    return None


def _busy_message(workdir: str, path: str, holder, age: float, me: dict, stale_after: float) -> str:
    if holder is None:
        who, when = "another run (its lock file is being written or is unreadable)", ""
    else:
        who = f"process {holder.get('pid')} on host {holder.get('host')}"
        when = f" since {holder.get('started')}"
    automatic = ("as soon as its process has exited" if holder is not None and _same_machine(holder, me)
                 else f"once its heartbeat is older than {stale_after:.0f} s")
    return (f"workdir {workdir} is in use by {who}{when} (last heartbeat {age:.0f} s ago, lock {path}). Two runs "
            f"in one workdir corrupt its checkpoints and metrics: wait for that run to end, stop it, or choose "
            f"another --workdir. A lock left by a killed run is taken over automatically, {automatic}.")


class WorkdirLock:
    """A held workdir lock; `release()` when the run ends (also on errors)."""

    def __init__(self, path: str, info: dict, heartbeat_every: float):
        self.path = path
        self.info = info
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, args=(heartbeat_every,), name="workdir_lock",
                                        daemon=True)
        self._thread.start()

    @classmethod
    def acquire(cls, workdir: str, *, stale_after: float = 180.0, heartbeat_every: float = 30.0) -> "WorkdirLock":
        """Takes `workdir`/run.lock, taking over a stale one; WorkdirBusyError while a live run holds it."""
        os.makedirs(workdir, exist_ok=True)
        path = os.path.join(workdir, LOCK_FILE)
        me = _this_process()
        for _ in range(10):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    holder, age = _read_lock(path)
                except FileNotFoundError:
                    continue  # released meanwhile
                reason = _stale_reason(holder, age, me, stale_after)
                if reason is None:
                    raise WorkdirBusyError(_busy_message(workdir, path, holder, age, me, stale_after)) from None
                if _take_over(path, holder, me["token"]):
                    logging.warning("Took over the lock of workdir %s: %s.", workdir, reason)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
                f.flush()
                os.fsync(f.fileno())
            return cls(path, me, heartbeat_every)
        raise WorkdirBusyError(f"workdir {workdir}: could not take {path}; other runs keep taking it")

    def _holds(self) -> bool:
        try:
            with open(self.path, encoding="utf-8") as f:
                return json.load(f).get("token") == self.info["token"]
        except (OSError, ValueError, AttributeError):
            return False

    def _beat(self, every: float):
        while not self._stop.wait(every):
            if not self._holds():
                self.lost = True
                logging.error("The lock %s no longer belongs to this run (deleted or taken over by another run); "
                              "stop one of the runs writing this workdir.", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as e:
                logging.warning("Could not refresh the lock %s: %s", self.path, e)

    def release(self):
        """Stops the heartbeat and removes the lock if it is still this run's."""
        self._stop.set()
        self._thread.join()
        if self._holds():
            os.remove(self.path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _take_over(path: str, holder, token: str) -> bool:
    """Renames the stale lock aside and removes it if it is still the one judged stale; a lock that a
    third run created in between is put back. True when the lock was removed."""
    aside = f"{path}.stale-{token}"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    try:
        moved, _ = _read_lock(aside)
    except FileNotFoundError:
        moved = None
    if (moved or {}).get("token") == (holder or {}).get("token"):
        os.remove(aside)
        return True
    try:
        os.link(aside, path)  # fails if yet another lock exists; then that one stands
    except FileExistsError:
        pass
    os.remove(aside)
    return False


def acquire_for_run(workdir: str, **kwargs) -> WorkdirLock | None:
    """Process 0 takes the lock and tells the others; every process raises WorkdirBusyError together.
    Returns the lock on process 0 and None elsewhere."""
    import jax

    lock, message = None, ""
    if jax.process_index() == 0:
        try:
            lock = WorkdirLock.acquire(workdir, **kwargs)
        except WorkdirBusyError as e:
            message = str(e)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        encoded = np.zeros(4096, np.uint8)
        raw = message.encode()[:4096]
        encoded[:len(raw)] = np.frombuffer(raw, np.uint8)
        encoded = np.asarray(multihost_utils.broadcast_one_to_all(encoded))
        message = bytes(encoded[encoded != 0]).decode(errors="replace")
    if message:
        raise WorkdirBusyError(message)
    return lock
