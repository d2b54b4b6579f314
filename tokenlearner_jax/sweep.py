"""Runs the sweep a config file defines (`get_sweep(arg)`, see recipes/sweeps.py): one main.py run per point.

  python -m tokenlearner_jax.sweep --config=configs/X.py[:arg] --workdir=ROOT [--parallel=N] [-- FLAGS]

Each point trains in ROOT/<point name> (e.g. ROOT/location=0.25,num_tokens=8,seed=0) as a subprocess
of main.py, what it prints in ROOT/<point>/console.txt (main.py writes the libraries' messages to log.txt
there, as in any workdir) and its outcome in ROOT/<point>/sweep_point.json. Points
run one after another, or N at a time. Running the same command again skips finished points; an
interrupted point resumes from its checkpoint (main.py does that given the same workdir); a failed
point is recorded with its error while the others go on, and is tried again by the next run.
SIGTERM / Ctrl-C is passed on to the running points (they checkpoint and exit); the sweep then exits
with main.py's preemption code 75. Every point's final metrics are gathered into ROOT/results.csv and
ROOT/results.md after each point and at the end. FLAGS after `--` go to every point's main.py.

  --print-commands prints one main.py line per point instead (for submitting to another scheduler).
  --gpus_per_point=K gives parallel slot i the GPUs i*K .. i*K+K-1 (CUDA_VISIBLE_DEVICES).
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time

from tokenlearner_jax.recipes import sweep_results, sweeps

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_PREEMPTED = 75  # main.py's code for "checkpoint written, rerun resumes" (train/preemption.py)
CONSOLE_FILE = "console.txt"  # a point's stdout and stderr, beside the log.txt of its main.py


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m tokenlearner_jax.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="configs/X.py[:arg], a config file with get_sweep(arg)")
    parser.add_argument("--workdir", required=True, help="sweep root; each point trains in a sub-directory")
    parser.add_argument("--parallel", type=int, default=1, help="points run at the same time")
    parser.add_argument("--gpus_per_point", type=int, default=0,
                        help="> 0: parallel slot i sees GPUs i*K..i*K+K-1 (CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--print-commands", "--print_commands", dest="print_commands", action="store_true",
                        help="print one main.py line per point and exit")
    parser.add_argument("flags", nargs="*", help="after --: flags passed to every point's main.py")
    args = parser.parse_args(argv)
    if args.parallel < 1:
        parser.error("--parallel must be >= 1")
    return args


def main_py_command(config: str, workdir: str, point: dict, flags: list[str], python: str = sys.executable,
                    main_py: str = os.path.join(REPO_ROOT, "main.py")) -> list[str]:
    return [python, main_py, f"--config={config}", f"--workdir={workdir}", *sweeps.to_flags(point), *flags]


def slot_env(slot: int, gpus_per_point: int) -> dict:
    """Environment of a point running in parallel slot `slot`."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if gpus_per_point > 0:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(slot * gpus_per_point + i) for i in range(gpus_per_point))
    return env


def _error_summary(console_path: str, returncode: int) -> str:
    """The last line a failed point printed that looks like an error, else its last line."""
    with open(console_path, encoding="utf-8", errors="replace") as f:
        lines = [line.strip() for line in f.read().splitlines()[-200:] if line.strip()]
    errors = [line for line in lines if "Error" in line or "error:" in line or "Exception" in line]
    text = (errors or lines or [""])[-1]
    return f"exit code {returncode}: {text[:400]}"


class Sweep:
    """The points of one sweep root and the loop that runs them."""

    def __init__(self, config: str, root: str, flags: list[str]):
        self.config, self.root, self.flags = config, os.path.abspath(root), list(flags)
        path, arg = sweeps.split_config_path(config)
        self.config_for_runs = os.path.abspath(path) + (f":{arg}" if arg else "")  # main.py runs in REPO_ROOT
        self.points = sweeps.load_sweep(config)
        self.names = [sweeps.point_name(point, self.points) for point in self.points]
        duplicates = sorted({n for n in self.names if self.names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{config}: get_sweep has repeated points {duplicates}")
        from tokenlearner_jax.train import trainer  # a bad point stops the sweep before anything runs

        for point in self.points:
            trainer.validate(sweeps.resolve(config, point))
        self.stop_signal = None

    def commands(self) -> list[list[str]]:
        return [main_py_command(self.config, os.path.join(self.root, name), point, self.flags, "python", "main.py")
                for point, name in zip(self.points, self.names)]

    def write_results(self) -> list[dict]:
        rows = sweep_results.collect(self.root, self.points, self.names)
        sweep_results.write_tables(self.root, rows, self.points)
        return rows

    def _write_manifest(self):
        os.makedirs(self.root, exist_ok=True)
        manifest = {"config": self.config, "flags": self.flags,
                    "points": [{"name": n, "overrides": p} for n, p in zip(self.names, self.points)]}
        with open(os.path.join(self.root, "sweep.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)

    def _on_signal(self, signum, frame):
        del frame
        self.stop_signal = signum

    def run(self, parallel: int = 1, gpus_per_point: int = 0) -> int:
        """Runs every unfinished point; returns 0 (all done), 1 (some failed) or 75 (stopped by a signal)."""
        if not os.path.exists(os.path.join(REPO_ROOT, "main.py")):
            raise FileNotFoundError(f"{REPO_ROOT}/main.py not found: run the sweep from a checkout of this "
                                    f"repository (pip install -e .)")
        self._write_manifest()
        todo = [i for i, name in enumerate(self.names)
                if sweep_results.read_status(os.path.join(self.root, name))["status"] != "done"]
        print(f"sweep {self.config}: {len(self.points)} points, {len(self.points) - len(todo)} already done, "
              f"{len(todo)} to run{f', {parallel} at a time' if parallel > 1 else ''}; root {self.root}",
              flush=True)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        running = {}  # slot -> (index, Popen, start time, console file)
        signalled = set()  # slots whose point has been passed the stop signal
        try:
            while (todo and self.stop_signal is None) or running:
                free = [s for s in range(parallel) if s not in running]
                while todo and free and self.stop_signal is None:
                    slot, index = free.pop(0), todo.pop(0)
                    running[slot] = self._start(index, slot, gpus_per_point)
                for slot, (index, proc, start, console) in list(running.items()):
                    if self.stop_signal is not None and slot not in signalled:
                        proc.send_signal(signal.SIGTERM)
                        signalled.add(slot)
                    if proc.poll() is not None:
                        console.close()
                        self._finish(index, proc.returncode, time.time() - start)
                        del running[slot]
                        signalled.discard(slot)
                time.sleep(0.2)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        rows = self.write_results()
        done = sum(row["status"] == "done" for row in rows)
        print(f"sweep: {done} of {len(rows)} points done; results in {os.path.join(self.root, 'results.md')}",
              flush=True)
        if self.stop_signal is not None:
            return EXIT_PREEMPTED
        return 0 if done == len(rows) else 1

    def _start(self, index: int, slot: int, gpus_per_point: int):
        name, point = self.names[index], self.points[index]
        directory = os.path.join(self.root, name)
        os.makedirs(directory, exist_ok=True)
        status = sweep_results.read_status(directory)
        command = main_py_command(self.config_for_runs, directory, point, self.flags)
        sweep_results.write_status(directory, {"status": "running", "overrides": point, "command": command,
                                               "attempts": status.get("attempts", 0) + 1,
                                               "seconds": status.get("seconds", 0.0)})
        console = open(os.path.join(directory, CONSOLE_FILE), "a", encoding="utf-8")
        console.write(f"\n=== sweep: {shlex.join(command)}\n")
        console.flush()
        print(f"[{index + 1}/{len(self.points)}] {name}: started", flush=True)
        proc = subprocess.Popen(command, cwd=REPO_ROOT, env=slot_env(slot, gpus_per_point), stdout=console,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        return index, proc, time.time(), console

    def _finish(self, index: int, returncode: int, seconds: float):
        name = self.names[index]
        directory = os.path.join(self.root, name)
        record = sweep_results.read_status(directory)
        record["seconds"] = record.get("seconds", 0.0) + seconds
        record["returncode"] = returncode
        if returncode == 0:
            record["status"], record["error"] = "done", ""
            metrics = sweep_results.final_metrics(directory)
            outcome = f"done in {seconds:.0f} s, eval/accuracy {metrics.get('eval/accuracy', float('nan')):.4f}"
        elif returncode == EXIT_PREEMPTED or self.stop_signal is not None:
            record["status"], record["error"] = "interrupted", ""
            outcome = "interrupted (resumes from its checkpoint on the next run)"
        else:
            record["status"] = "failed"
            console = os.path.join(directory, CONSOLE_FILE)
            record["error"] = _error_summary(console, returncode)
            outcome = f"FAILED, {record['error']} (output: {console})"
        sweep_results.write_status(directory, record)
        print(f"[{index + 1}/{len(self.points)}] {name}: {outcome}", flush=True)
        self.write_results()


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    sweep = Sweep(args.config, args.workdir, args.flags)
    if args.print_commands:
        for command in sweep.commands():
            print(shlex.join(command))
        return 0
    return sweep.run(args.parallel, args.gpus_per_point)


if __name__ == "__main__":
    sys.exit(main())
