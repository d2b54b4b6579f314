"""One run per workdir (a lock that stale runs give up), no resume under a config that changes the train
state, and files that are replaced in one rename rather than truncated."""

import importlib.util
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT
from tokenlearner_jax.train import workdir as workdir_lib


def _load():
    """configs/quickstart.py's config."""
    spec = importlib.util.spec_from_file_location("quickstart", os.path.join(ROOT, "configs", "quickstart.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


@pytest.fixture
def trained(tmp_path):
    """A workdir as a run leaves it: config.json and a committed checkpoint."""
    config = _load()
    workdir_lib.write_config(str(tmp_path), config)
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    return str(tmp_path), config


def test_a_changed_model_field_is_refused_naming_it_and_both_ways_out(trained):
    workdir, config = trained
    config.model.token_learner.num_tokens = 16
    config.optimizer.learning_rate = 0.5
    with pytest.raises(workdir_lib.ConfigChangedError) as error:
        workdir_lib.check_config(workdir, config)
    message = str(error.value)
    assert "\n" not in message
    assert "model.token_learner.num_tokens: 8 -> 16" in message and "optimizer.learning_rate" in message
    assert "step 20" in message and "new --workdir" in message and "--allow_config_change" in message
    workdir_lib.check_config(workdir, config, allow_change=True)  # resumes anyway, with a warning


def test_an_unreadable_config_json_is_refused_as_a_change(trained):
    workdir, config = trained
    with open(os.path.join(workdir, "config.json"), "a") as f:
        f.write("}garbage")
    with pytest.raises(workdir_lib.ConfigChangedError, match=r"config.json: 'unreadable \(Extra data"):
        workdir_lib.check_config(workdir, config)
    workdir_lib.check_config(workdir, config, allow_change=True)


def test_fields_that_keep_the_train_state_may_change(trained):
    workdir, config = trained
    config.num_train_steps, config.log_every_steps, config.eval_every_steps = 5000, 7, 100
    config.checkpoint_every_steps, config.keep_checkpoints, config.async_checkpointing = 13, 1, False
    config.fewshot.every_steps, config.eval_batch_size, config.dataset.num_workers = 50, 64, 3
    workdir_lib.check_config(workdir, config)
    changed, ignored, _ = workdir_lib.config_changes(workdir, config)
    assert not changed and len(ignored) == 9


def test_every_ignored_field_exists_in_the_config():
    fields = set(workdir_lib._flatten(json.loads(_load().to_json_best_effort())))
    for pattern in workdir_lib.IGNORED_FIELDS:
        prefix = pattern[:-1] if pattern.endswith(".*") else None
        assert (any(f.startswith(prefix) for f in fields) if prefix else pattern in fields), pattern


def test_without_checkpoints_there_is_nothing_to_protect(tmp_path):
    config = _load()
    workdir_lib.write_config(str(tmp_path), config)
    config.model.width = 7
    workdir_lib.check_config(str(tmp_path), config)


def test_config_json_is_replaced_and_the_previous_one_kept(trained):
    workdir, config = trained
    before = open(os.path.join(workdir, "config.json")).read()
    inode = os.stat(os.path.join(workdir, "config.json")).st_ino
    config.num_train_steps = 999
    workdir_lib.write_config(workdir, config)
    assert json.load(open(os.path.join(workdir, "config.json")))["num_train_steps"] == 999
    assert os.stat(os.path.join(workdir, "config.json")).st_ino != inode  # a new file, renamed over the old
    (kept,) = [n for n in os.listdir(workdir) if n.startswith("config-")]
    assert open(os.path.join(workdir, kept)).read() == before


def test_a_failed_write_leaves_the_old_file_whole(tmp_path):
    path = str(tmp_path / "config.json")
    workdir_lib.write_atomically(path, "old")
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(OSError):
            workdir_lib.write_atomically(path, "x" * 4096)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert open(path).read() == "old" and os.listdir(tmp_path) == ["config.json"]


# The lock.

def test_a_second_run_is_refused_naming_the_holder(tmp_path):
    lock = workdir_lib.WorkdirLock.acquire(str(tmp_path))
    with pytest.raises(workdir_lib.WorkdirBusyError) as error:
        workdir_lib.WorkdirLock.acquire(str(tmp_path))
    message = str(error.value)
    assert f"process {os.getpid()} on host {socket.gethostname()}" in message and "\n" not in message
    lock.release()
    assert not os.path.exists(lock.path)
    workdir_lib.WorkdirLock.acquire(str(tmp_path)).release()


def _write_lock(tmp_path, **fields):
    info = dict(workdir_lib._this_process(), **fields)
    path = tmp_path / workdir_lib.LOCK_FILE
    path.write_text(json.dumps(info))
    return path


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_lock_of_a_killed_run_on_this_host_is_taken_over_at_once(tmp_path):
    _write_lock(tmp_path, pid=_dead_pid())
    workdir_lib.WorkdirLock.acquire(str(tmp_path)).release()


def test_a_reused_process_id_does_not_keep_a_stale_lock(tmp_path):
    _write_lock(tmp_path, start_ticks=workdir_lib._start_ticks(os.getpid()) - 1)  # our pid, earlier process
    workdir_lib.WorkdirLock.acquire(str(tmp_path)).release()


def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_is_old(tmp_path):
    path = _write_lock(tmp_path, host="node-elsewhere", pid=1)
    with pytest.raises(workdir_lib.WorkdirBusyError, match="once its heartbeat is older than 180 s"):
        workdir_lib.WorkdirLock.acquire(str(tmp_path))
    old = time.time() - 181
    os.utime(path, (old, old))
    workdir_lib.WorkdirLock.acquire(str(tmp_path)).release()


def test_the_heartbeat_refreshes_the_lock_and_notices_losing_it(tmp_path):
    lock = workdir_lib.WorkdirLock.acquire(str(tmp_path), heartbeat_every=0.05)
    old = time.time() - 100
    os.utime(lock.path, (old, old))
    time.sleep(0.3)
    assert time.time() - os.stat(lock.path).st_mtime < 5 and not lock.lost
    os.remove(lock.path)
    deadline = time.time() + 10
    while not lock.lost and time.time() < deadline:
        time.sleep(0.02)
    assert lock.lost
    lock.release()


RACE = """
import sys, time
from tokenlearner_jax.train import workdir
start = float(sys.argv[2])
while time.time() < start:
    pass
try:
    lock = workdir.WorkdirLock.acquire(sys.argv[1])
except workdir.WorkdirBusyError:
    print("busy")
else:
    print("took it", flush=True)
    sys.stdin.read()  # held until every other process has answered
    lock.release()
"""


@pytest.mark.parametrize("stale", [False, True])
def test_of_runs_racing_for_a_free_or_stale_lock_exactly_one_wins(tmp_path, stale):
    if stale:
        _write_lock(tmp_path, pid=_dead_pid())
    start = time.time() + 4  # all processes have imported by then, and spin until the same moment
    procs = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), str(start)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True) for _ in range(6)]
    outputs = [proc.stdout.readline().strip() for proc in procs]
    for proc in procs:
        proc.communicate(timeout=60)
    assert sorted(outputs) == ["busy"] * 5 + ["took it"], outputs
    assert not [n for n in os.listdir(tmp_path) if n.startswith(workdir_lib.LOCK_FILE)]


# One process of a two-process job on 127.0.0.1: takes the run's lock, then tries again.
PAIR = """
import sys
import jax
jax.distributed.initialize(coordinator_address=sys.argv[2], num_processes=2, process_id=int(sys.argv[3]))
from tokenlearner_jax.train import workdir
lock = workdir.acquire_for_run(sys.argv[1])
print("holds" if lock else "no lock object")
try:
    workdir.acquire_for_run(sys.argv[1])
except workdir.WorkdirBusyError as e:
    print("refused:", e)
if lock:
    lock.release()
"""


def test_in_a_multi_process_run_process_0_holds_the_lock_and_all_refuse_together(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    logs = [open(tmp_path / f"p{i}.log", "w+") for i in range(2)]  # a full pipe would block a collective
    procs = [subprocess.Popen([sys.executable, "-c", PAIR, str(tmp_path / "run"), address, str(i)], cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdout=logs[i], stderr=subprocess.DEVNULL)
             for i in range(2)]
    outputs = []
    for proc, log in zip(procs, logs):
        assert proc.wait(timeout=300) == 0
        log.seek(0)
        outputs.append([line for line in log.read().splitlines() if not line.startswith("[Gloo]")])
    assert outputs[0][0] == "holds" and outputs[1][0] == "no lock object"
    refusal = f"refused: workdir {tmp_path / 'run'} is in use by process {procs[0].pid} on host {socket.gethostname()}"
    assert outputs[0][1].startswith(refusal) and outputs[1][1] == outputs[0][1]
    assert not os.path.exists(tmp_path / "run" / workdir_lib.LOCK_FILE)
