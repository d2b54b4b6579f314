"""Two processes on 127.0.0.1 (jax.distributed, CPU) train a tiny model together."""

import os
import socket
import subprocess
import sys

import numpy as np

from helpers import ROOT, run_python


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_end_with_identical_parameters_equal_to_one_process(tmp_path):
    address = f"127.0.0.1:{free_port()}"
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # files: a full pipe would block a collective
    workers = [subprocess.Popen(
        [sys.executable, "tests/multiprocess_worker.py", str(tmp_path / "pair"), str(tmp_path / f"p{i}.npz"),
         "2", address, "2", str(i)], cwd=ROOT, env=env, stdout=logs[i], stderr=subprocess.STDOUT)
        for i in range(2)]
    for i, worker in enumerate(workers):
        worker.wait(timeout=600)
        assert worker.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-5000:]
    # One process with the same 4 devices and the same global batch.
    run_python(["tests/multiprocess_worker.py", str(tmp_path / "single"), str(tmp_path / "single.npz"), "4"])

    p0, p1, single = (np.load(tmp_path / f"{name}.npz") for name in ("p0", "p1", "single"))
    assert sorted(p0.files) == sorted(p1.files) == sorted(single.files)
    for name in p0.files:
        np.testing.assert_array_equal(p0[name], p1[name], err_msg=name)
        np.testing.assert_allclose(p0[name], single[name], rtol=1e-4, atol=1e-6, err_msg=name)
    assert sorted(os.listdir(tmp_path / "pair" / "checkpoints")) == ["3", "6"]
    data_files = set(os.listdir(tmp_path / "pair" / "checkpoints" / "6" / "data"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= data_files  # each process's input position
