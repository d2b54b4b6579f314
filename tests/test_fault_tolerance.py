"""Faults injected into real short runs of main.py: signals, kill -9 around checkpoint writes, damaged
checkpoints, divergence, a lost process, an unwritable workdir."""

import functools
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from helpers import ROOT, TINY, final_params, run_python
from tokenlearner_jax.train import checkpoint as checkpoint_lib

STEPS = ["--config.num_train_steps=60", "--config.checkpoint_every_steps=10", "--config.keep_checkpoints=10",
         "--config.eval_every_steps=30"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")


def start(workdir, *extra):
    """main.py in the background, its output in `workdir`.log (a pipe nobody reads would fill and block it)."""
    log = open(f"{workdir}.log", "w")
    return subprocess.Popen([sys.executable, "main.py", f"--workdir={workdir}", *TINY, *STEPS, *extra], cwd=ROOT,
                            env=ENV, stdout=log, stderr=subprocess.STDOUT)


def wait_for(condition, proc, timeout=300, poll=0.002):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc.poll() is not None:
            return False
        time.sleep(poll)
    raise TimeoutError("condition not reached")


def logged_steps(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    return os.path.exists(path) and sum(1 for line in open(path) if '"train/loss"' in line) >= 2


def assert_same_params(a, b):
    jax.tree.map(np.testing.assert_array_equal, a, b)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted run: its workdir and final parameters."""
    workdir = str(tmp_path_factory.mktemp("straight") / "run")
    run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS])
    return workdir, final_params(workdir)[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_checkpoints_exits_and_resumes_exactly(tmp_path, straight, sig):
    workdir = str(tmp_path / "run")
    proc = start(workdir)
    assert wait_for(lambda: logged_steps(workdir), proc)
    proc.send_signal(sig)
    proc.wait(timeout=300)
    stderr = open(f"{workdir}.log").read()
    assert proc.returncode == 75, stderr[-3000:]
    match = re.search(rf"preempted by {sig.name}: checkpoint of step (\d+) written", stderr)
    assert match, stderr[-3000:]
    step = int(match.group(1))
    assert step < 60 and str(step) in os.listdir(os.path.join(workdir, "checkpoints"))
    run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS])
    assert_same_params(final_params(workdir)[1], straight[1])


def test_resumes_on_another_number_of_cpu_devices(tmp_path, straight):
    """Stopped on the CPU as two devices (optimizer state split over them), resumed as one: the state is
    restored into the new layout and training ends where the uninterrupted run did (up to the order of
    floating-point sums, which differs between one device and two)."""
    workdir = str(tmp_path / "run")
    proc = start(workdir, "--cpu_devices=2")
    assert wait_for(lambda: logged_steps(workdir), proc)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    first = open(f"{workdir}.log").read()
    assert proc.returncode == 75, first[-3000:]
    assert "devices: 2 x cpu" in first and "'data': 2" in first, first[-3000:]
    resumed = run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS, "--cpu_devices=1"]).stdout
    assert "devices: 1 x cpu" in resumed and "resuming from the checkpoint of step" in resumed, resumed[-3000:]
    # Leaf by leaf, relative to its norm. Not the biases that a softmax makes irrelevant (the keys', the last
    # one of TokenLearner's attention maps): their gradient is zero but for rounding, which Adam scales to
    # full steps, so they differ in sign between one device and two; they stay under 1e-3 in norm.
    for path, resumed_leaf in jax.tree_util.tree_leaves_with_path(final_params(workdir)[1]):
        reference = np.asarray(functools.reduce(lambda tree, key: tree[key.key], path, straight[1]))
        norm = np.linalg.norm(reference)
        if norm > 1e-2:
            assert np.linalg.norm(resumed_leaf - reference) < 1e-5 * norm, jax.tree_util.keystr(path)
        else:
            assert norm < 1e-3 and np.linalg.norm(resumed_leaf) < 1e-3, jax.tree_util.keystr(path)


def _in_checkpoint_write(workdir):
    directory = os.path.join(workdir, "checkpoints")
    return os.path.isdir(directory) and any(n.endswith("orbax-checkpoint-tmp") for n in os.listdir(directory))


@pytest.mark.parametrize("moment", ["before", "during", "after"])
def test_kill_9_around_a_checkpoint_write_resumes_exactly(tmp_path, straight, moment):
    workdir = str(tmp_path / "run")
    proc = start(workdir)
    condition = {
        "before": lambda: logged_steps(workdir),  # before the first checkpoint (step 10)
        "during": lambda: _in_checkpoint_write(workdir),  # a checkpoint directory still being written
        "after": lambda: os.path.isdir(os.path.join(workdir, "checkpoints", "10")),  # just committed
    }[moment]
    assert wait_for(condition, proc, poll=0.0005), "the run ended before the moment to kill it"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=10).all_steps()
    assert not committed or committed[-1] < 60
    if moment == "before":
        assert not committed
    run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS])
    assert_same_params(final_params(workdir)[1], straight[1])
    assert not _in_checkpoint_write(workdir)


def _damage(step_dir, how):
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(step_dir, "state"))
             for name in names]
    if how == "truncated":
        biggest = max(files, key=os.path.getsize)
        with open(biggest, "r+b") as f:
            f.truncate(os.path.getsize(biggest) // 2)
    else:
        shutil.rmtree(os.path.join(step_dir, "state"))


@pytest.mark.parametrize("how", ["truncated", "missing"])
def test_damaged_latest_checkpoint_falls_back_to_the_newest_good_one(tmp_path, straight, how):
    workdir = str(tmp_path / "run")
    shutil.copytree(straight[0], workdir)
    _damage(os.path.join(workdir, "checkpoints", "60"), how)
    proc = run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS])
    assert "The checkpoint of step 60 is damaged" in proc.stderr
    assert "resuming from the checkpoint of step 50" in proc.stdout
    (moved,) = os.listdir(os.path.join(workdir, "damaged_checkpoints"))  # kept, not deleted
    assert moved.startswith("60-")
    assert_same_params(final_params(workdir)[1], straight[1])  # steps 51..60 redone exactly


def test_divergence_stops_naming_the_step_and_keeps_good_checkpoints(tmp_path):
    workdir = str(tmp_path / "run")
    proc = run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS, "--config.optimizer.learning_rate=1e30",
                       "--config.optimizer.grad_clip_norm=0", "--config.checkpoint_every_steps=1"], check=False)
    assert proc.returncode != 0
    match = re.search(r"step (\d+): train/(loss|grad_norm) is (nan|inf|-inf)", proc.stderr)
    assert match, proc.stderr[-3000:]
    bad_step = int(match.group(1))
    committed = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"), keep=10).all_steps()
    assert all(step < bad_step for step in committed)
    for step in committed:
        state = checkpoint_lib.read_state(os.path.join(workdir, "checkpoints"), step)[1]
        assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(state["params"]))


def test_divergence_can_skip_and_count_bad_steps_instead(tmp_path):
    workdir = str(tmp_path / "run")
    run_python(["main.py", f"--workdir={workdir}", *TINY, *STEPS, "--config.optimizer.learning_rate=1e30",
                "--config.optimizer.grad_clip_norm=0", "--config.skip_nonfinite_steps=True"])
    from tokenlearner_jax.train import metrics_log
    skipped = sum(r.get("train/skipped_steps", 0) for r in metrics_log.read_metrics(workdir))
    assert skipped > 0
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(final_params(workdir)[1]))


PAIR_STEPS = ["--config.num_train_steps=60", "--config.checkpoint_every_steps=20", "--config.eval_every_steps=60",
              "--num_processes=2", "--heartbeat_timeout_seconds=10"]


class ProcessPair:
    """Two processes of one run of main.py on this machine, their logs in files (a full pipe would block a
    process inside a collective)."""

    def __init__(self, tmp_path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.address = f"127.0.0.1:{s.getsockname()[1]}"
        self.tmp_path = tmp_path
        self.workdir = str(tmp_path / "run")

    def start(self, name):
        self.logs = [open(self.tmp_path / f"{name}{i}.log", "w+") for i in range(2)]
        self.procs = [subprocess.Popen([sys.executable, "main.py", f"--workdir={self.workdir}", *TINY, *PAIR_STEPS,
                                        f"--coordinator_address={self.address}", f"--process_id={i}"],
                                       cwd=ROOT, env=ENV, stdout=self.logs[i], stderr=subprocess.STDOUT)
                      for i in range(2)]

    def output(self, i):
        self.logs[i].seek(0)
        return self.logs[i].read()

    def lose_process_1(self, signum):
        """Starts the pair, sends `signum` to process 1 once step 20's checkpoint is being written and
        returns process 0's exit code and output; process 1 is gone afterwards."""
        self.start("first")
        try:
            assert wait_for(lambda: os.path.isdir(os.path.join(self.workdir, "checkpoints", "20")), self.procs[0],
                            poll=0.01)
            self.procs[1].send_signal(signum)
            lost_at = time.time()
            self.procs[0].wait(timeout=120)
            assert time.time() - lost_at < 60  # bounded by the 10 s heartbeat timeout, not a hang
            return self.procs[0].returncode, self.output(0)
        finally:
            for proc in self.procs:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()


# What jax.distributed prints before it aborts a process whose peer's heartbeat timed out.
HEARTBEAT_LOST_1 = "The following tasks are unhealthy (stopped sending heartbeats):\n1\n"


def test_a_killed_process_stops_the_others_and_a_restart_resumes(tmp_path):
    pair = ProcessPair(tmp_path)
    returncode, text = pair.lose_process_1(signal.SIGKILL)
    if "a collective failed" in text:  # process 0 was in a collective: it stops at once, with our line
        assert "another process has probably died" in text and returncode == 76, text[-3000:]
    else:  # it was waiting elsewhere (a checkpoint barrier): jax.distributed stops it at the heartbeat timeout
        assert HEARTBEAT_LOST_1 in text and returncode == -signal.SIGABRT, text[-3000:]

    pair.start("restart")  # a restart of all processes resumes and finishes
    for proc in pair.procs:
        proc.wait(timeout=600)
    assert [proc.returncode for proc in pair.procs] == [0, 0], pair.output(0)[-3000:]
    assert "resuming from the checkpoint of step" in pair.output(0)
    assert "60" in os.listdir(os.path.join(pair.workdir, "checkpoints"))


def test_a_hung_process_stops_the_others_within_the_heartbeat_bound(tmp_path):
    """A stopped process keeps its connections open, so no collective fails: the heartbeat must end it."""
    returncode, text = ProcessPair(tmp_path).lose_process_1(signal.SIGSTOP)
    assert HEARTBEAT_LOST_1 in text and returncode == -signal.SIGABRT, text[-3000:]


def test_unwritable_workdir_fails_before_training(tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    proc = run_python(["main.py", f"--workdir={not_a_dir / 'run'}", *TINY], check=False)
    assert proc.returncode != 0
    assert f"workdir {not_a_dir / 'run'} is not writable" in proc.stderr


def test_failed_checkpoint_write_names_the_step_and_keeps_the_previous_one(tmp_path):
    """A write that fails like on a full disk (file-size limit: EFBIG) raises a clear error; step 1 survives."""
    directory = str(tmp_path / "checkpoints")
    checkpointer = checkpoint_lib.Checkpointer(directory, keep=3, async_save=False)
    state = {"w": jax.numpy.arange(4096.0)}
    checkpointer.save(1, state, {"next_index": 1})
    checkpointer.wait()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, hard))
    try:
        with pytest.raises(checkpoint_lib.CheckpointWriteError, match=r"step 2 .*checkpoint of step 1 is intact"):
            checkpointer.save(2, state, {"next_index": 2})
            checkpointer.wait()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous_handler)
    restored = checkpointer.load(1, jax.eval_shape(lambda: state))
    np.testing.assert_array_equal(np.asarray(restored.state["w"]), np.arange(4096.0))
    assert restored.iterator_state == {"next_index": 1}
