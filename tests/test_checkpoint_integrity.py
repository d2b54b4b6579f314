"""Checkpoints know when they are damaged: checksums of every array, the iterator state and the manifest
itself are verified at restore; damage is quarantined, a differently shaped state is refused without
moving anything, non-finite states are never written, and a failed asynchronous write is reported."""

import contextlib
import json
import logging
import os
import resource
import shutil
import signal
import sys
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tokenlearner_jax.train import checkpoint as checkpoint_lib
from tokenlearner_jax.train import integrity

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "pre_refactor_workdir", "checkpoints")
ITERATOR = {"next_index": 224}
EXTRA = {"train_window": [[6, {"train/loss": 1.5}]]}


def _state(seed=0):
    rng = np.random.default_rng(seed)
    return {"step": jnp.asarray(7, jnp.int32),
            "params": {"w": jnp.asarray(rng.normal(size=(64, 64)), jnp.float32),
                       "b": jnp.asarray(rng.normal(size=(64,)), jnp.bfloat16)},
            "mu": jnp.asarray(rng.normal(size=(1000,)), jnp.float32)}


def _abstract(state):
    return jax.eval_shape(lambda: state)


def _same(a, b):
    return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _write(directory, steps=(7,), async_save=False):
    checkpointer = checkpoint_lib.Checkpointer(directory, keep=5, async_save=async_save)
    for step in steps:
        checkpointer.save(step, _state(step), ITERATOR, extra=EXTRA)
    checkpointer.close()


def test_a_checkpoint_restores_verified_with_its_iterator_state_and_extra(tmp_path):
    _write(str(tmp_path), async_save=True)
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=5)
    restored = checkpointer.load(7, _abstract(_state()))
    assert restored.step == 7 and _same(restored.state, _state(7))
    assert restored.iterator_state == ITERATOR and restored.extra == EXTRA
    manifest = json.load(open(tmp_path / "7" / "manifest" / "metadata"))
    assert sorted(manifest["leaves"]) == ["mu", "params/b", "params/w", "step"]
    assert manifest["leaves"]["params/b"]["dtype"] == "bfloat16"


def test_checksums_do_not_depend_on_the_sharding():
    """The same values give the same checksums on one device or split over a mesh (integer sums are
    exact in any order), so a checkpoint verifies after a restore onto another mesh."""
    devices = np.asarray(jax.devices())
    state = _state()
    single, _ = integrity.describe(state)
    if len(devices) >= 2:
        mesh = Mesh(devices[:2].reshape(2, 1), ("a", "b"))
        sharded = dict(state, mu=jax.device_put(state["mu"], NamedSharding(mesh, PartitionSpec("a"))))
        assert integrity.describe(sharded)[0] == single
    changed = np.asarray(state["params"]["w"]).copy()
    changed.reshape(-1).view(np.uint8)[4099] ^= 0x10  # one bit of one element
    state["params"]["w"] = jnp.asarray(changed)
    assert integrity.checksum_differences(single, integrity.describe(state)[0]) == ["params/w"]


# Files a restore reads: a flipped byte in them must be detected. orbax's bookkeeping
# (_CHECKPOINT_METADATA, commit_success.txt) and the per-process OCDBT trees that the commit merges
# into state/manifest.ocdbt + state/d are not read back; a flip there must leave the restore exact.
def _kind(relative: str) -> str:
    name = os.path.basename(relative)
    if name in ("_CHECKPOINT_METADATA", "commit_success.txt"):
        return "orbax bookkeeping (not read)"
    if relative.startswith("manifest/"):
        return "manifest"
    if relative.startswith("data/"):
        return "iterator state"
    if relative.startswith("state/ocdbt.process_"):
        return "array data" if "/d/" in relative else "per-process index (not read)"
    if relative.startswith("state/d/") or relative == "state/manifest.ocdbt":
        return "array index"
    return "array metadata"  # _METADATA, _sharding, array_metadatas/process_0


def _flip_and_load(source, tmp_path, relative, position, mask):
    trial = str(tmp_path / "trial")
    shutil.rmtree(trial, ignore_errors=True)
    shutil.copytree(source, trial)
    with open(os.path.join(trial, "7", relative), "r+b") as f:
        f.seek(position)
        byte = f.read(1)[0]
        f.seek(position)
        f.write(bytes([byte ^ mask]))
    checkpointer = checkpoint_lib.Checkpointer(trial, keep=5, async_save=False)
    try:
        restored = checkpointer.load(7, _abstract(_state()))
    except checkpoint_lib.CheckpointDamagedError as e:
        return f"detected: {e}"
    finally:
        checkpointer.close()
    exact = _same(restored.state, _state(7)) and restored.iterator_state == ITERATOR and restored.extra == EXTRA
    return "identical" if exact else "SILENTLY DIFFERENT"


def test_one_flipped_byte_in_each_kind_of_file_is_detected(tmp_path):
    source = str(tmp_path / "source")
    _write(source)
    files = sorted(os.path.relpath(os.path.join(root, name), os.path.join(source, "7"))
                   for root, _, names in os.walk(os.path.join(source, "7")) for name in names)
    data_files = [f for f in files if _kind(f) == "array data"]
    biggest = {max(data_files, key=lambda f: os.path.getsize(os.path.join(source, "7", f)))}
    outcomes = {}
    for relative in files:
        size = os.path.getsize(os.path.join(source, "7", relative))
        small_json = _kind(relative) in ("manifest", "iterator state", "array metadata")
        positions = sorted({0, size // 2, size - 1}) if small_json else [size // 2]
        for position in positions:
            for mask in (0x01, 0xFF):  # the lowest bit (a digit becomes another), and a whole byte
                outcomes[(relative, position, mask)] = _flip_and_load(source, tmp_path, relative, position, mask)
    report = "\n".join(f"{k}: {v[:120]}" for k, v in outcomes.items())
    assert not [k for k, v in outcomes.items() if not v.startswith(("detected", "identical"))], report
    kinds = {_kind(f) for f in files}
    assert {"manifest", "iterator state", "array data", "array index", "array metadata"} <= kinds
    for (relative, position, mask), outcome in outcomes.items():
        must_detect = _kind(relative) in ("manifest", "iterator state", "array index", "array metadata") or (
            relative in biggest)
        assert outcome.startswith("detected") or not must_detect, f"{relative}@{position}^{mask:#x}: {outcome}"
    # In the middle of the array data, the flip decodes to other values: only the checksums see it.
    middle = [v for (r, p, m), v in outcomes.items() if r in biggest]
    assert all("checksums of 1 array differ" in v for v in middle), middle


def test_damage_is_quarantined_and_a_changed_shape_is_refused_without_moving_anything(tmp_path):
    directory = str(tmp_path / "checkpoints")
    quarantine = str(tmp_path / "damaged")
    _write(directory, steps=(5, 7))
    wider = dict(_state(), mu=jnp.zeros((1001,), jnp.float32))
    checkpointer = checkpoint_lib.Checkpointer(directory, keep=5)
    with pytest.raises(checkpoint_lib.CheckpointMismatchError, match=r"step 7 .*mu: checkpoint float32\[1000\], "
                                                                     r"configured float32\[1001\]"):
        checkpointer.restore_latest(_abstract(wider), quarantine)
    assert checkpointer.all_steps() == [5, 7] and not os.path.exists(quarantine)

    step_dir = os.path.join(directory, "7", "state")
    data = max((os.path.join(root, name) for root, _, names in os.walk(step_dir) for name in names
                if "/ocdbt.process_" in root and root.endswith("/d")), key=os.path.getsize)
    with open(data, "r+b") as f:  # 8 inverted bytes inside a data file, as in issue 16
        f.seek(os.path.getsize(data) // 2)
        chunk = f.read(8)
        f.seek(os.path.getsize(data) // 2)
        f.write(bytes(b ^ 0xFF for b in chunk))
    restored = checkpointer.restore_latest(_abstract(_state()), quarantine)
    assert restored.step == 5 and _same(restored.state, _state(5))
    assert checkpointer.all_steps() == [5]
    (moved,) = os.listdir(quarantine)
    assert moved.startswith("7-")


def test_a_checkpoint_without_its_manifest_is_damaged(tmp_path):
    _write(str(tmp_path), steps=(5, 7))
    shutil.rmtree(tmp_path / "7" / "manifest")  # orbax's _CHECKPOINT_METADATA still lists it
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=5)
    with pytest.raises(checkpoint_lib.CheckpointDamagedError, match="its manifest is missing"):
        checkpointer.load(7, _abstract(_state()))
    assert checkpointer.restore_latest(_abstract(_state()), str(tmp_path / "damaged")).step == 5


def test_a_checkpoint_of_another_process_count_is_a_mismatch_not_damage(tmp_path):
    _write(str(tmp_path))
    path = tmp_path / "7" / "manifest" / "metadata"
    body = integrity.unseal(json.loads(path.read_text()))
    body["iterators"] = body["iterators"] * 2  # as if written by two processes
    path.write_text(json.dumps(integrity.seal(body)))
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=5)
    with pytest.raises(checkpoint_lib.CheckpointMismatchError, match="written by 2 processes"):
        checkpointer.load(7, _abstract(_state()))
    assert _same(checkpointer.load(7, _abstract(_state()), with_data=False).state, _state(7))


def test_checkpoints_written_before_manifests_still_restore(tmp_path):
    directory = str(tmp_path / "checkpoints")
    shutil.copytree(FIXTURE, directory)
    checkpointer = checkpoint_lib.Checkpointer(directory, keep=5)
    metadata = checkpoint_lib.ocp.StandardCheckpointHandler().metadata(
        checkpoint_lib.epath.Path(directory) / "4" / "state")
    abstract = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), metadata)
    restored = checkpointer.restore_latest(abstract, str(tmp_path / "damaged"))
    assert restored.step == 4 and restored.iterator_state == {"next_index": 128} and restored.extra == {}
    assert int(restored.state["step"]) == 4
    abstract["params"]["head"]["bias"] = jax.ShapeDtypeStruct((12,), jnp.float32)
    with pytest.raises(checkpoint_lib.CheckpointMismatchError, match=r"params/head/bias: checkpoint float32\[10\]"):
        checkpointer.restore_latest(abstract, str(tmp_path / "damaged"))
    assert checkpointer.all_steps() == [4]


def test_a_state_with_nan_or_inf_is_never_written(tmp_path):
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=5, async_save=False)
    checkpointer.save(5, _state(), ITERATOR)
    bad = _state()
    bad["mu"] = bad["mu"].at[3].set(jnp.inf)
    with pytest.raises(checkpoint_lib.NonFiniteStateError, match=r"step 6: 1 array of .* \(mu\); stopped without "
                                                                 r"writing .*checkpoint of step 5 is intact"):
        checkpointer.save(6, bad, ITERATOR)
    checkpointer.close()
    assert sorted(os.listdir(tmp_path)) == ["5"]


@contextlib.contextmanager
def file_size_limit(size: int):
    """RLIMIT_FSIZE of `size` bytes (writes past it fail with EFBIG, like a full disk) inside the block
    only: pytest's own output (a file, under CI) must not meet it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


def test_a_failed_asynchronous_write_is_reported_by_the_next_poll_in_one_line(tmp_path, caplog):
    checkpointer = checkpoint_lib.Checkpointer(str(tmp_path), keep=5, async_save=True)
    checkpointer.save(1, _state(), ITERATOR)
    checkpointer.wait()
    with file_size_limit(2048), caplog.at_level(logging.INFO):
        checkpointer.save(2, _state(), ITERATOR)
        deadline = time.time() + 60
        while checkpointer.failed_save() is None and time.time() < deadline:
            time.sleep(0.01)  # a training step
    message = checkpointer.failed_save()
    assert message and "\n" not in message, message
    assert "could not write the checkpoint of step 2" in message and "checkpoint of step 1 is intact" in message
    assert "File too large" in message or "OUT_OF_RANGE" in message, message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR and "orbax" in r.pathname]
    with pytest.raises(checkpoint_lib.CheckpointWriteError, match="step 2"):
        checkpointer.raise_if_save_failed()
    checkpointer.close()  # the failure was reported: closing does not raise it again
    restored = checkpoint_lib.Checkpointer(str(tmp_path), keep=5).restore_latest(_abstract(_state()), str(tmp_path))
    assert restored.step == 1


def test_what_a_failed_write_leaves_behind_is_not_printed_but_other_errors_are(monkeypatch):
    printed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: printed.append(str(unraisable.exc_value)))
    checkpoint_lib._quiet_orbax_leftovers()  # what a Checkpointer without `verbose` installs
    args = lambda error: types.SimpleNamespace(exc_type=type(error), exc_value=error, exc_traceback=None,
                                               err_msg=None, object=None)
    sys.unraisablehook(args(RuntimeError("Event loop is closed")))  # tensorstore finishing a failed save
    sys.unraisablehook(args(ValueError("a real problem")))
    assert printed == ["a real problem"]


def test_the_write_probe_is_removed_when_the_disk_is_full(tmp_path):
    with file_size_limit(4096), pytest.raises(OSError, match=f"workdir {tmp_path} is not writable"):
        checkpoint_lib.check_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


# One process of a two-process job on 127.0.0.1 with 2 CPU devices each: saves a state sharded over
# all 4 devices, restores and verifies it, and prints what it restored.
WORKER = """
import json, sys
import jax
jax.config.update("jax_num_cpu_devices", 2)
directory, address, index = sys.argv[1], sys.argv[2], int(sys.argv[3])
jax.distributed.initialize(coordinator_address=address, num_processes=2, process_id=index)
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tokenlearner_jax.train import checkpoint, integrity
mesh = Mesh(np.asarray(jax.devices()), ("x",))
split, whole = NamedSharding(mesh, PartitionSpec("x")), NamedSharding(mesh, PartitionSpec())
values = np.arange(512, dtype=np.float32).reshape(64, 8) / 3
state = {"w": jax.make_array_from_callback(values.shape, split, lambda i: values[i]),
         "step": jax.make_array_from_callback((), whole, lambda i: np.int32(3))}
saver = checkpoint.Checkpointer(directory, keep=2, async_save=True)
saver.save(3, state, {"next_index": 100 + index})
saver.close()
abstract = {"w": jax.ShapeDtypeStruct(values.shape, np.float32, sharding=split),
            "step": jax.ShapeDtypeStruct((), np.int32, sharding=whole)}
restored = checkpoint.Checkpointer(directory, keep=2).load(3, abstract)
print("RESULT", json.dumps({"iterator": restored.iterator_state, "leaves": integrity.describe(restored.state)[0]}))
"""


def test_a_sharded_two_process_checkpoint_verifies_on_both_and_on_one_process(tmp_path):
    import socket
    import subprocess
    import sys

    from helpers import ROOT

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    directory = str(tmp_path / "checkpoints")
    logs = [open(tmp_path / f"worker{i}.log", "w+") for i in range(2)]  # a full pipe would block a collective
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, directory, address, str(i)], cwd=ROOT,
                                env=dict(os.environ, PYTHONPATH=ROOT), stdout=logs[i], stderr=subprocess.STDOUT)
               for i in range(2)]
    results = []
    for worker, log in zip(workers, logs):
        worker.wait(timeout=300)
        log.seek(0)
        text = log.read()
        assert worker.returncode == 0, text[-3000:]
        results.append(json.loads(text.split("RESULT ", 1)[1].splitlines()[0]))
    assert [r["iterator"] for r in results] == [{"next_index": 100}, {"next_index": 101}]
    values = np.arange(512, dtype=np.float32).reshape(64, 8) / 3
    expected, _ = integrity.describe({"w": jnp.asarray(values), "step": jnp.asarray(3, jnp.int32)})
    assert results[0]["leaves"] == results[1]["leaves"] == expected  # the same checksums on every mesh

    checkpointer = checkpoint_lib.Checkpointer(directory, keep=2)  # this process alone, one device
    abstract = {"w": jax.ShapeDtypeStruct((64, 8), jnp.float32), "step": jax.ShapeDtypeStruct((), jnp.int32)}
    with pytest.raises(checkpoint_lib.CheckpointReadError, match="Topology mismatch"):  # no target shardings:
        checkpointer.load(3, abstract, with_data=False)  # not damage
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract)
    np.testing.assert_array_equal(np.asarray(checkpointer.load(3, abstract, with_data=False).state["w"]), values)
    with pytest.raises(checkpoint_lib.CheckpointMismatchError, match="written by 2 processes and this run has 1"):
        checkpointer.load(3, abstract)
