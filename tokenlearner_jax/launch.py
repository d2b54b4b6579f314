"""Starts one config on several processes: a TPU pod slice, a SLURM GPU cluster, or N processes here.

  python -m tokenlearner_jax.launch --config=C --workdir=W --local_processes=2 [-- FLAGS]
      N processes of main.py on 127.0.0.1 with --coordinator_address/--num_processes/--process_id;
      their output is streamed with a [pI] prefix; exits with the first failing process's code.
  python -m tokenlearner_jax.launch --config=C --workdir=W --tpu=NAME --zone=Z [--execute] [-- FLAGS]
      the `gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...` line that starts main.py on
      every worker of the slice (printed; run with --execute). The TPU runtime connects the workers.
  python -m tokenlearner_jax.launch --config=C --workdir=W --slurm --nodes=2 --gpus_per_node=8
      [--partition=P --time=24:00:00 --account=A] [--script=job.sbatch] [--execute] [-- FLAGS]
      an sbatch script (printed or written to --script; submitted with --execute) that starts one
      main.py per GPU with srun; jax.distributed reads the SLURM environment (one process per GPU,
      each using the GPU of its SLURM_LOCALID). A preempted job (exit code 75) requeues itself.

FLAGS after `--` go to main.py (e.g. --config.batch_size=1024). The workdir must be one directory that
every process sees (a shared file system); a restarted job resumes from its checkpoints.
"""

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_PREEMPTED = 75  # main.py: checkpoint written, rerun resumes


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m tokenlearner_jax.launch", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:arg]")
    parser.add_argument("--workdir", required=True, help="shared by all processes")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--local_processes", type=int, default=0, help="N processes of main.py on this machine")
    where.add_argument("--tpu", default="", help="TPU VM (pod slice) name")
    where.add_argument("--slurm", action="store_true", help="generate an sbatch script")
    parser.add_argument("--execute", action="store_true", help="--tpu / --slurm: run gcloud / sbatch")

    local = parser.add_argument_group("--local_processes")
    local.add_argument("--cpu_devices_per_process", type=int, default=0,
                       help="> 0: each process gets this many CPU devices (XLA_FLAGS)")
    local.add_argument("--grace_seconds", type=float, default=60.0,
                       help="after a process fails, how long the others may take to stop before SIGTERM")

    tpu = parser.add_argument_group("--tpu")
    tpu.add_argument("--zone", default="")
    tpu.add_argument("--project", default="")
    tpu.add_argument("--remote_dir", default="~/tokenlearner_jax", help="this repository on every TPU worker")
    tpu.add_argument("--remote_python", default="python3")

    slurm = parser.add_argument_group("--slurm")
    slurm.add_argument("--nodes", type=int, default=1)
    slurm.add_argument("--gpus_per_node", type=int, default=8)
    slurm.add_argument("--cpus_per_gpu", type=int, default=8)
    slurm.add_argument("--partition", default="")
    slurm.add_argument("--account", default="")
    slurm.add_argument("--time", default="24:00:00", help="wall-time limit")
    slurm.add_argument("--job_name", default="tokenlearner")
    slurm.add_argument("--python", default="python", help="the python of the cluster's environment")
    slurm.add_argument("--setup", default="", help="shell line run before srun, e.g. 'source .venv/bin/activate'")
    slurm.add_argument("--script", default="", help="write the sbatch script here (default: print it)")

    parser.add_argument("flags", nargs="*", help="after --: flags for main.py")
    args = parser.parse_args(argv)
    if args.tpu and not args.zone:
        parser.error("--tpu needs --zone")
    if args.local_processes < 0 or (not args.tpu and not args.slurm and args.local_processes < 1):
        parser.error("--local_processes must be >= 1")
    return args


def main_py_args(config: str, workdir: str, flags: list[str]) -> list[str]:
    return ["main.py", f"--config={config}", f"--workdir={workdir}", *flags]


# ----------------------------------------------------------------------------------------- TPU pod slice

def tpu_command(name: str, zone: str, project: str, remote_dir: str, python: str, config: str, workdir: str,
                flags: list[str]) -> list[str]:
    """`gcloud compute tpus tpu-vm ssh NAME --zone=Z --worker=all --command="cd DIR && python3 main.py ..."`
    as an argument list. `remote_dir` may start with '~/' (expanded by the worker's shell)."""
    home = remote_dir.startswith("~/")
    directory = "~/" + shlex.quote(remote_dir[2:]) if home else shlex.quote(remote_dir)
    remote = f"cd {directory} && {shlex.join([python, *main_py_args(config, workdir, flags)])}"
    command = ["gcloud", "compute", "tpus", "tpu-vm", "ssh", name, f"--zone={zone}"]
    if project:
        command.append(f"--project={project}")
    return command + ["--worker=all", f"--command={remote}"]


# ----------------------------------------------------------------------------------------- SLURM

def sbatch_script(*, config: str, workdir: str, flags: list[str], nodes: int, gpus_per_node: int,
                  cpus_per_gpu: int, time_limit: str, job_name: str, partition: str = "", account: str = "",
                  python: str = "python", setup: str = "", repo_dir: str = REPO_ROOT) -> str:
    """An sbatch script: `nodes` x `gpus_per_node` tasks, one per GPU, each a main.py process.

    Every task sees all GPUs of its node; jax.distributed.initialize() takes the coordinator (first node),
    the process count and index (SLURM_NTASKS, SLURM_PROCID) and the task's GPU (SLURM_LOCALID) from the
    environment. SIGTERM reaches the tasks 120 s before the time limit; they checkpoint and exit 75,
    and the script then requeues the job, which resumes from the checkpoint."""
    lines = ["#!/bin/bash",
             f"#SBATCH --job-name={job_name}",
             f"#SBATCH --nodes={nodes}",
             f"#SBATCH --ntasks-per-node={gpus_per_node}",
             f"#SBATCH --gpus-per-node={gpus_per_node}",
             f"#SBATCH --cpus-per-task={cpus_per_gpu}",
             f"#SBATCH --time={time_limit}",
             "#SBATCH --signal=TERM@120",
             "#SBATCH --requeue",
             "#SBATCH --open-mode=append",
             f"#SBATCH --output={os.path.join(workdir, 'slurm-%j.out')}"]
    if partition:
        lines.append(f"#SBATCH --partition={partition}")
    if account:
        lines.append(f"#SBATCH --account={account}")
    lines += ["", "set -u", f"cd {shlex.quote(repo_dir)}"]
    if setup:
        lines.append(setup)
    srun = ["srun", "--kill-on-bad-exit=1", python, *main_py_args(config, workdir, flags)]
    lines += [shlex.join(srun),
              "code=$?",
              f"if [ $code -eq {EXIT_PREEMPTED} ]; then",
              "  echo \"preempted: requeueing job $SLURM_JOB_ID (it resumes from its checkpoint)\"",
              "  scontrol requeue \"$SLURM_JOB_ID\"",
              "fi",
              "exit $code", ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- local processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_commands(num_processes: int, port: int, config: str, workdir: str, flags: list[str],
                   python: str = sys.executable) -> list[list[str]]:
    """One main.py command line per process, with the coordinator flags of a run on 127.0.0.1."""
    coordinator = [f"--coordinator_address=127.0.0.1:{port}", f"--num_processes={num_processes}"]
    return [[python, *main_py_args(config, workdir, flags), *coordinator, f"--process_id={i}"]
            for i in range(num_processes)]


def _stream(index: int, stream, lock: threading.Lock):
    for line in stream:
        with lock:
            sys.stdout.write(f"[p{index}] {line}")
            sys.stdout.flush()


def run_local(commands: list[list[str]], cpu_devices_per_process: int = 0, grace_seconds: float = 60.0) -> int:
    """Runs the processes, prefixing their output with [pI]; returns 0 if all succeed, else the exit code
    of the first process to fail. After a failure the others get `grace_seconds` to stop on their own
    (they notice through jax.distributed), then SIGTERM, then SIGKILL 30 s later. SIGTERM / Ctrl-C of
    the launcher is passed on to all processes."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if cpu_devices_per_process > 0:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={cpu_devices_per_process}").strip()
    lock = threading.Lock()
    procs = [subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, errors="replace") for command in commands]
    readers = [threading.Thread(target=_stream, args=(i, p.stdout, lock), daemon=True)
               for i, p in enumerate(procs)]
    for reader in readers:
        reader.start()

    stop = []
    previous = {s: signal.signal(s, lambda signum, frame: stop.append(signum))
                for s in (signal.SIGTERM, signal.SIGINT)}
    first_failure, failed_at, terminated_at, forwarded = None, None, None, False
    try:
        while any([p.poll() is None for p in procs]):  # a list, not a generator: every process is polled
            if stop and not forwarded:
                for p in procs:
                    if p.poll() is None:
                        p.send_signal(signal.SIGTERM)
                forwarded = True
            for i, p in enumerate(procs):
                if p.returncode not in (None, 0) and first_failure is None:
                    first_failure, failed_at = i, time.time()
            now = time.time()
            if failed_at is not None and terminated_at is None and now - failed_at > grace_seconds:
                for p in procs:
                    if p.poll() is None:
                        p.terminate()
                terminated_at = now
            if terminated_at is not None and now - terminated_at > 30:
                for p in procs:
                    if p.poll() is None:
                        p.kill()
            time.sleep(0.1)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for reader in readers:
        reader.join()
    for i, p in enumerate(procs):
        if p.returncode not in (None, 0) and first_failure is None:
            first_failure = i
    codes = [p.returncode for p in procs]
    print(f"launch: exit codes {codes}" + (f"; process {first_failure} failed first" if first_failure is not None
                                           else ""), flush=True)
    return 0 if first_failure is None else codes[first_failure]


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.tpu:
        command = tpu_command(args.tpu, args.zone, args.project, args.remote_dir, args.remote_python,
                              args.config, args.workdir, args.flags)
        print(shlex.join(command), flush=True)
        return subprocess.call(command) if args.execute else 0
    if args.slurm:
        script = sbatch_script(config=args.config, workdir=os.path.abspath(args.workdir), flags=args.flags,
                               nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_gpu=args.cpus_per_gpu,
                               time_limit=args.time, job_name=args.job_name, partition=args.partition,
                               account=args.account, python=args.python, setup=args.setup)
        if not args.script:
            print(script, end="")
            if not args.execute:
                return 0
        os.makedirs(os.path.abspath(args.workdir), exist_ok=True)  # sbatch writes its output file there
        path = args.script or os.path.join(os.path.abspath(args.workdir), "job.sbatch")
        with open(path, "w", encoding="utf-8") as f:
            f.write(script)
        print(f"launch: wrote {path}", flush=True)
        return subprocess.call(["sbatch", path]) if args.execute else 0
    commands = local_commands(args.local_processes, free_port(), args.config, args.workdir, args.flags)
    return run_local(commands, args.cpu_devices_per_process, args.grace_seconds)


if __name__ == "__main__":
    sys.exit(main())
