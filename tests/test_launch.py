"""Multi-host launch: two local processes of main.py through `python -m tokenlearner_jax.launch`, the exit
code of a failed process, and the generated TPU-pod command line and SLURM script (run against stand-in
`srun` / `scontrol` / `sbatch` executables that record how they were called)."""

import os
import shlex
import stat
import subprocess
import sys
import time

from helpers import ROOT, run_python
from tokenlearner_jax import launch
from tokenlearner_jax.train import metrics_log

# A tiny ViT + TokenLearner on digits, as flags for main.py after configs/quickstart.py.
TINY = ["--config.model.width=32", "--config.model.depth=2", "--config.model.num_heads=2",
        "--config.model.mlp_dim=64", "--config.model.token_learner.location=1", "--config.dataset.image_size=16",
        "--config.batch_size=32", "--config.eval_batch_size=120", "--config.log_every_steps=2",
        "--config.optimizer.warmup_steps=2"]


def test_two_local_processes_train_together(tmp_path):
    workdir = tmp_path / "run"
    proc = run_python(["-m", "tokenlearner_jax.launch", "--config=configs/quickstart.py", f"--workdir={workdir}",
                       "--local_processes=2", "--cpu_devices_per_process=2", "--", *TINY,
                       "--config.num_train_steps=4", "--config.checkpoint_every_steps=2"])
    lines = proc.stdout.splitlines()
    assert any(line.startswith("[p0] ") for line in lines) and any(line.startswith("[p1] ") for line in lines)
    assert "devices: 4 x cpu (cpu), 2 process(es); mesh {'data': 4, 'fsdp': 1, 'model': 1}" in proc.stdout
    assert "launch: exit codes [0, 0]" in proc.stdout
    evals = [r for r in metrics_log.read_metrics(str(workdir)) if "eval/accuracy" in r]
    assert evals[-1]["step"] == 4 and evals[-1]["eval/num_examples"] == 360
    data_files = set(os.listdir(workdir / "checkpoints" / "4" / "data"))
    assert {"process_0-of-2.json", "process_1-of-2.json"} <= data_files


def test_a_failed_process_fails_the_launch_and_the_others_are_stopped():
    failing = [sys.executable, "-c", "import sys; print('bad input', flush=True); sys.exit(3)"]
    waiting = [sys.executable, "-c", "import time; time.sleep(600)"]
    start = time.time()
    assert launch.run_local([waiting, failing], grace_seconds=1.0) == 3
    assert time.time() - start < 60


def test_tpu_command_starts_main_py_on_every_worker():
    command = launch.tpu_command("my-pod", "us-central2-b", "proj", "~/tokenlearner_jax", "python3",
                                 "configs/vit_b16_tl_half.py", "/mnt/shared/runs/tl half",
                                 ["--config.batch_size=4096"])
    assert command[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "my-pod", "--zone=us-central2-b",
                           "--project=proj"]
    assert command[8] == "--worker=all"
    remote = command[9].removeprefix("--command=")
    assert remote.startswith("cd ~/tokenlearner_jax && ")
    assert shlex.split(remote.split(" && ", 1)[1]) == [
        "python3", "main.py", "--config=configs/vit_b16_tl_half.py", "--workdir=/mnt/shared/runs/tl half",
        "--config.batch_size=4096"]
    printed = run_python(["-m", "tokenlearner_jax.launch", "--config=configs/vit_b16_tl_half.py",
                          "--workdir=/mnt/shared/runs/tl half", "--tpu=my-pod", "--zone=us-central2-b",
                          "--project=proj", "--", "--config.batch_size=4096"]).stdout
    assert shlex.split(printed) == command


def fake_executable(directory, name, body):
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def run_script(script, tmp_path, srun_exit):
    """Runs an sbatch script with stand-in srun (records its arguments, exits `srun_exit`) and scontrol."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake_executable(bin_dir, "srun", f'printf "%s\\n" "$@" > "$CALLS/srun"\nexit {srun_exit}\n')
    fake_executable(bin_dir, "scontrol", 'echo "$@" > "$CALLS/scontrol"\n')
    calls = tmp_path / f"calls_{srun_exit}"
    calls.mkdir()
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(calls), SLURM_JOB_ID="4242")
    proc = subprocess.run(["bash", str(path)], env=env, capture_output=True, text=True, timeout=60)
    return proc, calls


def test_sbatch_script_runs_one_task_per_gpu_and_requeues_when_preempted(tmp_path):
    script = launch.sbatch_script(config="configs/vit_b16_tl_half.py", workdir="/shared/runs/tl", nodes=4,
                                  gpus_per_node=8, cpus_per_gpu=12, time_limit="12:00:00", job_name="tl",
                                  partition="gpu", account="vision", python=".venv/bin/python",
                                  setup="export TFDS_DATA_DIR=/shared/tfds", flags=["--config.batch_size=4096"],
                                  repo_dir=str(tmp_path))
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --cpus-per-task=12", "#SBATCH --time=12:00:00", "#SBATCH --partition=gpu",
                 "#SBATCH --account=vision", "#SBATCH --signal=TERM@120", "#SBATCH --requeue",
                 "#SBATCH --output=/shared/runs/tl/slurm-%j.out", "export TFDS_DATA_DIR=/shared/tfds"):
        assert line in script.splitlines(), line
    assert "coordinator_address" not in script  # jax.distributed reads the SLURM environment

    finished, calls = run_script(script, tmp_path, srun_exit=0)
    assert finished.returncode == 0, finished.stderr
    assert (calls / "srun").read_text().splitlines() == [
        "--kill-on-bad-exit=1", ".venv/bin/python", "main.py", "--config=configs/vit_b16_tl_half.py",
        "--workdir=/shared/runs/tl", "--config.batch_size=4096"]
    assert not (calls / "scontrol").exists()

    preempted, calls = run_script(script, tmp_path, srun_exit=75)
    assert preempted.returncode == 75
    assert (calls / "scontrol").read_text().strip() == "requeue 4242"

    failed, calls = run_script(script, tmp_path, srun_exit=1)
    assert failed.returncode == 1 and not (calls / "scontrol").exists()


def test_slurm_execute_writes_the_script_and_submits_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake_executable(bin_dir, "sbatch", 'echo "$@" > "$CALLS/sbatch"\necho "Submitted batch job 7"\n')
    workdir = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "tokenlearner_jax.launch", "--config=configs/quickstart.py",
                           f"--workdir={workdir}", "--slurm", "--nodes=2", "--gpus_per_node=4", "--execute"],
                          env=dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", CALLS=str(tmp_path)),
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    script = workdir / "job.sbatch"
    assert (tmp_path / "sbatch").read_text().strip() == str(script)
    assert "#SBATCH --ntasks-per-node=4" in script.read_text() and "Submitted batch job 7" in proc.stdout
