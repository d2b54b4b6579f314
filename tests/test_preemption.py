"""SIGTERM at any moment gives exit 75 and one line: during start-up (no checkpoint written, the last
intact one named), between steps (the loop checkpoints first), and after the loop's last poll."""

import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT

# A stand-in for main.py: installs the guard first, then "starts up" and "trains" as the mode says.
PROGRAM = """
import os, sys, time
from tokenlearner_jax.train import preemption
guard = preemption.install()

def main(mode, checkpoint_dir):
    guard.watch_checkpoints(checkpoint_dir)
    print("ready", flush=True)
    if mode == "startup":
        try:
            time.sleep(60)  # imports, data, compilation, restore...
        except Exception:
            print("swallowed by a broad except", flush=True)
        return
    if mode == "finaliser":
        class Finaliser:
            def __del__(self):  # like jax's garbage-collection callback: an exception here is dropped
                time.sleep(60)
        Finaliser()
        print("start-up went on", flush=True)
        time.sleep(60)
        return
    with guard.deferred():
        for step in range(1, 100000):
            time.sleep(0.01)
            if mode == "loop" and guard.requested():
                raise preemption.Preempted(step, guard.signal_name)
            if mode == "after_loop" and step == 50:
                print("loop done", flush=True)
                time.sleep(2)  # the signal comes after the last poll, e.g. during a final write
                break

preemption.exit_on_preemption(lambda: main(sys.argv[1], sys.argv[2]))
print("finished normally")
"""


def _run(tmp_path, mode, sig=signal.SIGTERM, committed=()):
    checkpoints = tmp_path / "checkpoints"
    for step in committed:
        (checkpoints / str(step)).mkdir(parents=True)
    (checkpoints / "30.orbax-checkpoint-tmp-1").mkdir(parents=True)  # a partial write never counts
    proc = subprocess.Popen([sys.executable, "-c", PROGRAM, mode, str(checkpoints)], cwd=ROOT,
                            env=dict(os.environ, PYTHONPATH=ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ready"
    if mode == "after_loop":
        assert proc.stdout.readline().strip() == "loop done"
    time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


@pytest.mark.parametrize("committed, kept", [((), "no checkpoint exists yet"),
                                             ((10, 20), "the checkpoint of step 20 is intact")])
def test_a_signal_during_start_up_exits_75_with_one_line(tmp_path, committed, kept):
    code, out, err = _run(tmp_path, "startup", committed=committed)
    assert code == 75, err
    assert err.strip() == (f"tokenlearner_jax: preempted by SIGTERM outside the training steps: no new checkpoint "
                           f"written ({kept}); rerun the same command to resume")
    assert "swallowed" not in out and "finished normally" not in out


def test_a_signal_inside_a_finaliser_during_start_up_still_exits_75(tmp_path):
    code, out, err = _run(tmp_path, "finaliser", committed=(10,))
    assert code == 75 and "start-up went on" not in out, (out, err)
    assert err.strip() == ("tokenlearner_jax: preempted by SIGTERM outside the training steps: no new checkpoint "
                           "written (the checkpoint of step 10 is intact); rerun the same command to resume")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_the_loop_stops_after_the_current_step(tmp_path, sig):
    code, _, err = _run(tmp_path, "loop", sig=sig)
    assert code == 75, err
    lines = err.strip().splitlines()
    assert lines[0] == f"tokenlearner_jax: received {sig.name}: stopping after the current step."
    assert lines[1].startswith(f"tokenlearner_jax: preempted by {sig.name}: checkpoint of step ")
    assert len(lines) == 2


def test_a_signal_after_the_last_poll_of_the_loop_still_exits_75(tmp_path):
    code, _, err = _run(tmp_path, "after_loop", committed=(50,))
    assert code == 75, err
    assert err.strip().splitlines()[-1] == (
        "tokenlearner_jax: preempted by SIGTERM outside the training steps: no new checkpoint written "
        "(the checkpoint of step 50 is intact); rerun the same command to resume")
