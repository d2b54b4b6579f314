"""Fault matrix of issue 16: each failure injected into a short real run of main.py, one table row each.

  python experiments/fault_matrix.py [--reduced] [--only=name,name] [--output=PATH]

Every row starts main.py (configs/quickstart.py shrunk as in tests/test_trainer.py: width 32, depth 2,
16x16 digits, batch 32), injects one fault and compares what happened with what issue 16 asks for.
The runs that must resume exactly are compared with one uninterrupted run of the same schedule
(final parameters bit for bit; metrics.jsonl without the *_per_sec timings). A row passes only when
every part of its expectation holds; the table says which part failed. The script exits 1 when a row
fails, so CI can run `--reduced` (shorter schedule, a one-trial kill -9 soak) as a test.

The full form writes experiments/results/fault_matrix.md (its kill -9 soak row runs
experiments/soak_kill.py for 10 trials of 100 quickstart steps with a checkpoint every 20); --reduced
writes nothing unless --output is given. On an idle 2-core machine a main.py start costs 10-20 s, so
even --reduced takes several minutes; --jobs=2 runs two rows at once.
"""

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax.train import checkpoint  # noqa: E402

RESULTS = os.path.join(ROOT, "experiments", "results", "fault_matrix.md")
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
TRACEBACK = "Traceback (most recent call last)"

# tests/test_trainer.py's TINY: a small ViT + TokenLearner on digits.
TINY = ["--config=configs/quickstart.py", "--config.model.width=32", "--config.model.depth=2",
        "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.model.token_learner.location=1",
        "--config.dataset.image_size=16", "--config.batch_size=32", "--config.eval_batch_size=100",
        "--config.optimizer.warmup_steps=2", "--config.dataset.shift_pixels=1"]


@dataclasses.dataclass(frozen=True)
class Schedule:
    steps: int
    checkpoint_every: int
    eval_every: int
    log_every: int  # coprime to checkpoint_every, so that most stopping steps are not log steps

    def flags(self):
        return [f"--config.num_train_steps={self.steps}", f"--config.checkpoint_every_steps={self.checkpoint_every}",
                f"--config.eval_every_steps={self.eval_every}", f"--config.log_every_steps={self.log_every}",
                "--config.keep_checkpoints=10"]


FULL = Schedule(steps=60, checkpoint_every=20, eval_every=30, log_every=7)
REDUCED = Schedule(steps=24, checkpoint_every=8, eval_every=12, log_every=5)


class Run:
    """main.py in the background; its output is read through a pipe (a log file would itself be subject
    to a file-size limit put on the process)."""

    def __init__(self, workdir, flags, *, file_size_limit=0):
        self.workdir = workdir
        command = [sys.executable, "main.py", f"--workdir={workdir}", *flags]
        if file_size_limit:  # set in a small launcher that then becomes main.py (no fork of this threaded process)
            command = [sys.executable, "-c", "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, "
                       f"({file_size_limit}, resource.RLIM_INFINITY)); os.execv(sys.executable, sys.argv[1:])",
                       *command]
        self.started = time.time()
        self.proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, errors="replace")
        self._lines = []
        self._reader = threading.Thread(target=lambda: self._lines.extend(self.proc.stdout), daemon=True)
        self._reader.start()

    def wait(self, timeout=1800) -> int:
        self.proc.wait(timeout=timeout)
        self._reader.join(timeout=60)
        self.elapsed = time.time() - self.started
        with open(f"{self.workdir}.{self.proc.pid}.log", "w", encoding="utf-8") as f:
            f.write(self.output)
        return self.proc.returncode

    @property
    def output(self) -> str:
        """The console: stdout and stderr."""
        return "".join(self._lines)

    @property
    def log(self) -> str:
        """The run's log file (library messages and our INFO lines), '' if none."""
        path = os.path.join(self.workdir, "log.txt")
        return open(path, encoding="utf-8", errors="replace").read() if os.path.exists(path) else ""


def main_py(workdir, *flags, **kwargs) -> Run:
    run = Run(workdir, flags, **kwargs)
    run.wait()
    return run


def wait_for(condition, run: Run, timeout=900, poll=0.005) -> bool:
    """True once `condition()` holds; False if the run ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if run.proc.poll() is not None:
            return condition()
        time.sleep(poll)
    return False


def committed(workdir) -> list[int]:
    directory = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(directory) if n.isdigit()) if os.path.isdir(directory) else []


def records(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    parsed = []
    with open(path) as f:
        for line in f:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written, or cut short by a kill
                pass
    return parsed


def comparable(workdir) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records(workdir)]


def state_of(workdir, step=None) -> dict:
    """The whole train state of a checkpoint (the latest by default), as numpy."""
    return checkpoint.read_state(os.path.join(workdir, "checkpoints"), step)[1]


def same_params(a, b) -> bool:
    a, b = jax.tree.leaves(state_of(a)["params"]), jax.tree.leaves(state_of(b)["params"])
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def digest(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def one_line_error(run: Run, *needles) -> list[str]:
    """Problems with an expected refusal: exit 0, a traceback, a missing phrase."""
    problems = []
    if run.proc.returncode == 0:
        problems.append("exit 0")
    if TRACEBACK in run.output:
        problems.append(f"{run.output.count(TRACEBACK)} tracebacks")
    problems += [f"no {needle!r} in the output" for needle in needles if needle not in run.output]
    return problems


def verdict(problems) -> tuple[str, bool]:
    return ("; ".join(problems), not problems)


class Matrix:
    """The rows; each returns (observed, passed). `baseline` is the shared uninterrupted run."""

    def __init__(self, root: str, schedule: Schedule, reduced: bool):
        self.root, self.schedule, self.reduced = root, schedule, reduced
        self._baseline = None
        self._lock = threading.Lock()

    def flags(self, *extra):
        return [*TINY, *self.schedule.flags(), *extra]

    def workdir(self, name) -> str:
        return os.path.join(self.root, name)

    @property
    def baseline(self) -> str:
        with self._lock:
            if self._baseline is None:
                workdir = self.workdir("baseline")
                run = main_py(workdir, *self.flags())
                if run.proc.returncode != 0:
                    raise RuntimeError(f"the uninterrupted run failed:\n{run.output[-3000:]}")
                self._baseline = workdir
        return self._baseline

    def copy_of_baseline(self, name) -> str:
        workdir = self.workdir(name)
        shutil.copytree(self.baseline, workdir)
        return workdir

    # 1. A changed config.
    def changed_config(self):
        workdir = self.copy_of_baseline("changed_config")
        before = (committed(workdir), digest(os.path.join(workdir, "metrics.jsonl")),
                  digest(os.path.join(workdir, "config.json")))
        run = main_py(workdir, *self.flags("--config.model.token_learner.num_tokens=16"))
        problems = one_line_error(run, "model.token_learner.num_tokens", "--workdir", "--allow_config_change")
        if committed(workdir) != before[0] or os.path.exists(os.path.join(workdir, "damaged_checkpoints")):
            moved = os.path.join(workdir, "damaged_checkpoints")
            problems.append(f"checkpoints {sorted(os.listdir(moved)) if os.path.isdir(moved) else []} moved to "
                            f"damaged_checkpoints/, then {committed(workdir)} written again")
        if digest(os.path.join(workdir, "metrics.jsonl")) != before[1]:
            problems.append(f"metrics.jsonl rewritten ({len(records(workdir))} records)")
        if digest(os.path.join(workdir, "config.json")) != before[2]:
            problems.append("config.json overwritten")
        return verdict(problems)

    # 2. Silent corruption.
    def flipped_bytes(self):
        workdir = self.copy_of_baseline("flipped_bytes")
        last = committed(workdir)[-1]
        data_dir = os.path.join(workdir, "checkpoints", str(last), "state")
        biggest = max((os.path.join(r, n) for r, _, ns in os.walk(data_dir) for n in ns if "ocdbt.process_" in r),
                      key=os.path.getsize)
        with open(biggest, "r+b") as f:  # 8 inverted bytes inside the largest parameter data file
            f.seek(os.path.getsize(biggest) // 2)
            chunk = f.read(8)
            f.seek(os.path.getsize(biggest) // 2)
            f.write(bytes(b ^ 0xFF for b in chunk))
        run = main_py(workdir, *self.flags())
        previous = committed(self.baseline)[-2]
        problems = [] if run.proc.returncode == 0 else [f"exit {run.proc.returncode}: {last_line(run)}"]
        if not re.search(rf"checkpoint of step {last} is damaged", run.output):
            problems.append("damage not reported")
        quarantined = os.listdir(os.path.join(workdir, "damaged_checkpoints")) if os.path.isdir(
            os.path.join(workdir, "damaged_checkpoints")) else []
        if not any(n.startswith(f"{last}-") for n in quarantined):
            problems.append("not quarantined")
        if f"resuming from the checkpoint of step {previous}" not in run.output:
            problems.append(f"did not fall back to step {previous}")
        if run.proc.returncode == 0 and not same_params(workdir, self.baseline):
            problems.append("final parameters differ from the uninterrupted run")
        return verdict(problems)

    # 3. Two runs on one workdir.
    def two_runs_together(self):
        workdir = self.workdir("two_runs_together")
        runs = [Run(workdir, self.flags()), Run(workdir, self.flags())]
        codes = sorted(run.wait() for run in runs)
        refused = [run for run in runs if run.proc.returncode != 0]
        problems = []
        if codes[0] != 0 or len(refused) != 1:
            problems.append(f"exit codes {codes}")
        for run in refused:
            other = [r for r in runs if r is not run][0]
            if f"in use by process {other.proc.pid}" not in run.output:
                problems.append(f"refusal does not name process {other.proc.pid}: {last_line(run)}")
            if TRACEBACK in run.output:
                problems.append("traceback")
        problems += self._metrics_problems(workdir)
        return verdict(problems)

    def second_run_later(self):
        workdir = self.workdir("second_run_later")
        first = Run(workdir, self.flags())
        wait_for(lambda: committed(workdir), first)
        first.proc.send_signal(signal.SIGSTOP)  # paused, so that it is still live when the second run starts
        try:
            second = main_py(workdir, *self.flags())
        finally:
            first.proc.send_signal(signal.SIGCONT)
        first.wait()
        problems = [] if first.proc.returncode == 0 else [f"first run exit {first.proc.returncode}"]
        problems += one_line_error(second, f"in use by process {first.proc.pid} on host {platform.node()}")
        problems += self._metrics_problems(workdir)
        return verdict(problems)

    def _metrics_problems(self, workdir) -> list[str]:
        got = comparable(workdir)
        keys = [(r["step"], tuple(sorted(r))) for r in got]
        problems = []
        if len(keys) != len(set(keys)):
            problems.append(f"{len(keys) - len(set(keys))} duplicate metrics records")
        if [r["step"] for r in got] != sorted(r["step"] for r in got):
            problems.append("metrics.jsonl out of order")
        if got != comparable(self.baseline):
            problems.append("metrics.jsonl differs from the uninterrupted run")
        if committed(workdir)[-1:] != [self.schedule.steps] or not same_params(workdir, self.baseline):
            problems.append("final parameters differ from the uninterrupted run")
        return problems

    # 4. The non-finite guard and a checkpoint every step.
    def exploding_learning_rate(self):
        workdir = self.workdir("exploding_learning_rate")
        run = main_py(workdir, *self.flags("--config.optimizer.learning_rate=1e30", "--config.optimizer.grad_clip_norm=0",
                                           "--config.checkpoint_every_steps=1"))
        problems = one_line_error(run)
        if not re.search(r"step \d+: .*(nan|inf|NaN or Inf)", run.output):
            problems.append("no message naming the step")
        for step in committed(workdir):
            leaves = jax.tree.leaves(state_of(workdir, step))
            bad = sum(1 for x in leaves if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)))
            if bad:
                problems.append(f"checkpoint {step} holds {bad} non-finite arrays")
        return verdict(problems)

    # 5. Exact evaluation.
    def _image_folder(self, name, *, corrupt_eval=0, empty_class=False) -> str:
        from sklearn.datasets import load_digits
        from PIL import Image

        root = self.workdir(name + "_data")
        digits = load_digits()
        for split, indices in (("train", range(200)), ("test", range(200, 211))):
            for i in indices:
                path = os.path.join(root, split, str(digits.target[i]), f"{i}.png")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                pixels = (digits.images[i] * 15.9).astype(np.uint8)
                Image.fromarray(np.stack([pixels] * 3, -1)).save(path)
        test_files = sorted(os.path.join(r, n) for r, _, ns in os.walk(os.path.join(root, "test")) for n in ns)
        for path in test_files[:corrupt_eval]:
            with open(path, "wb") as f:
                f.write(b"not an image")
        if empty_class:
            os.makedirs(os.path.join(root, "train", "x_empty"))
        return root

    def _image_folder_flags(self, root, *extra):
        return [*TINY, "--config.dataset.name=image_folder", f"--config.dataset.data_dir={root}",
                "--config.dataset.eval_split=test", "--config.num_train_steps=4", "--config.eval_every_steps=4",
                "--config.checkpoint_every_steps=4", "--config.log_every_steps=2", *extra]

    def unreadable_eval_images(self):
        root = self._image_folder("eval", corrupt_eval=2)
        workdir = self.workdir("unreadable_eval_images")
        run = main_py(workdir, *self._image_folder_flags(root))
        if run.proc.returncode != 0:
            return verdict([f"exit {run.proc.returncode}: {last_line(run)}"])
        (final,) = [r for r in records(workdir) if "eval/accuracy" in r]
        problems = []
        if final.get("eval/num_examples") != 9:
            problems.append(f"eval/num_examples={final.get('eval/num_examples')} (9 readable of 11)")
        if final.get("eval/skipped_files") != 2:
            problems.append(f"eval/skipped_files={final.get('eval/skipped_files', 'absent')}")
        return verdict(problems) if problems else ("num_examples 9, skipped_files 2", True)

    def empty_class_folder(self):
        root = self._image_folder("empty", empty_class=True)
        run = main_py(self.workdir("empty_class_folder"),
                      *self._image_folder_flags(root, "--config.model.num_classes=11"))
        return verdict(one_line_error(run, "x_empty"))

    # 6, 7. Signals.
    def sigterm_during_start_up(self):
        workdir = self.workdir("sigterm_during_start_up")
        run = Run(workdir, self.flags())
        time.sleep(1.5)  # imports, data and compilation take longer than this
        run.proc.send_signal(signal.SIGTERM)
        code = run.wait()
        problems = [] if code == 75 else [f"exit {code}"]
        if "preempted by SIGTERM" not in run.output:
            problems.append("no message")
        if TRACEBACK in run.output:
            problems.append("traceback")
        if committed(workdir):
            problems.append(f"checkpoints written: {committed(workdir)}")
        return verdict(problems)

    def sigterm_between_log_steps(self):
        for attempt in range(5):
            workdir = self.workdir(f"sigterm_between_log_steps_{attempt}")
            run = Run(workdir, self.flags())
            # After the first log step's progress line, and a little later on each attempt: a signal
            # that comes while the loop still writes that step's records lands on the log step.
            wait_for(lambda r=run: f"step {self.schedule.log_every}/" in r.output, run)
            time.sleep(0.05 * attempt)
            run.proc.send_signal(signal.SIGTERM)
            code = run.wait()
            match = re.search(r"preempted by SIGTERM: checkpoint of step (\d+) written", run.output)
            if code != 75 or not match:
                return verdict([f"exit {code}: {last_line(run)}"])
            step = int(match.group(1))
            if step % self.schedule.log_every:
                break  # between two log steps, as wanted
        else:
            return "the signal landed on a log step five times", False
        rerun = main_py(workdir, *self.flags())
        problems = [] if rerun.proc.returncode == 0 else [f"rerun exit {rerun.proc.returncode}"]
        if comparable(workdir) != comparable(self.baseline):
            got, want = comparable(workdir), comparable(self.baseline)
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            problems.append(f"metrics.jsonl differs from the uninterrupted run from record {first} "
                            f"(step {want[first]['step'] if first < len(want) else '-'})")
        if not same_params(workdir, self.baseline):
            problems.append("parameters differ")
        return "; ".join([f"stopped at step {step}", *problems]), not problems

    # 8. Disk full.
    def async_save_failure(self):
        """A run logging every step, 30 steps between checkpoints: the write of step 60 fails after the
        first checkpoint; the steps logged between orbax finishing that write and the run's message
        count how late the failure is reported. The limit (64 KiB) stops the checkpoint's array data
        (a file of over 100 KiB) but not metrics.jsonl or the TensorBoard file (under 50 KiB by step 90)."""
        workdir = self.workdir("async_save_failure")
        run = Run(workdir, [*TINY, "--config.num_train_steps=120", "--config.checkpoint_every_steps=30",
                            "--config.eval_every_steps=120", "--config.log_every_steps=1",
                            "--config.async_checkpointing=True"])
        if not wait_for(lambda: 30 in committed(workdir), run, poll=0.002):
            return verdict([f"the run ended before its first checkpoint: {last_line(run)}"])
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.prlimit(run.proc.pid, resource.RLIMIT_FSIZE, (64 << 10, hard))
        run.wait()
        problems = one_line_error(run, "could not write the checkpoint of step 60", "checkpoint of step 30 is intact")
        finished = run.output.find("[step=60] CheckpointManager Save Finalize is done")  # orbax's INFO line
        message = run.output.find("could not write the checkpoint of step 60")
        if finished < 0 or message < 0:
            last = max((r["step"] for r in records(workdir)), default=0)
            if last >= 90:
                problems.append(f"reported only at the next save (records up to step {last})")
        else:
            late = len(re.findall(r"\] \[\d+\] train/", run.output[finished:message]))
            if late > 1:
                problems.append(f"reported {late} steps after the write had failed")
        if [n for n in os.listdir(workdir) if n.startswith(".write_probe")]:
            problems.append("probe file left")
        return verdict(problems)

    def full_disk_at_start(self):
        workdir = self.workdir("full_disk_at_start")
        run = main_py(workdir, *self.flags(), file_size_limit=512 << 10)
        problems = one_line_error(run, "is not writable")
        if os.path.isdir(workdir) and [n for n in os.listdir(workdir) if n.startswith(".write_probe")]:
            problems.append("probe file left")
        return verdict(problems)

    # 9. Bad values: one line naming the field or file, no traceback.
    def _bad_value(self, name, override, needle):
        run = main_py(self.workdir(name), *self.flags(override))
        problems = one_line_error(run, needle)
        return ("; ".join(problems + [f"{run.elapsed:.0f} s"]), not problems)

    def too_many_tokens(self):
        return self._bad_value("too_many_tokens", "--config.model.token_learner.num_tokens=100",
                               "config.model.token_learner.num_tokens")

    def infinite_learning_rate(self):
        return self._bad_value("infinite_learning_rate", "--config.optimizer.learning_rate=inf",
                               "config.optimizer.learning_rate")

    def indivisible_heads(self):
        return self._bad_value("indivisible_heads", "--config.model.num_heads=5", "config.model.num_heads")

    def unknown_dataset(self):
        return self._bad_value("unknown_dataset", "--config.dataset.name=bogus", "config.dataset.name")

    def empty_weight_file(self):
        path = self.workdir("empty.npz")
        open(path, "wb").close()
        return self._bad_value("empty_weight_file", f"--config.init_from.path={path}", path)

    # The kill -9 soak.
    def kill_9_soak(self):
        trials = ["--trials=1", "--steps=10", "--checkpoint_every=5"] if self.reduced else [
            "--trials=10", "--steps=100", "--checkpoint_every=20"]
        output = self.workdir("soak.md")
        proc = subprocess.run([sys.executable, "experiments/soak_kill.py", *trials, f"--output={output}"], cwd=ROOT,
                              env=ENV, capture_output=True, text=True)
        match = re.search(r"(\d+) of (\d+) resumed runs ended bit-identical", proc.stdout)
        if proc.returncode != 0 or not match:
            return verdict([f"exit {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"])
        return f"{match.group(1)}/{match.group(2)} bit-identical", match.group(1) == match.group(2)


def last_line(run: Run) -> str:
    lines = [line for line in run.output.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


# (name, the fault, what issue 16 expects)
ROWS = [
    ("changed_config", "1. rerun of a finished workdir with num_tokens 8 -> 16",
     "exit != 0, one line naming the field, a new --workdir and --allow_config_change; checkpoints, "
     "metrics.jsonl and config.json untouched"),
    ("flipped_bytes", "2. 8 inverted bytes inside a parameter file of the last checkpoint",
     "damage reported, checkpoint quarantined, fall back to the previous one, final parameters exact"),
    ("two_runs_together", "3a. two runs started together on one workdir",
     "one finishes, the other refuses naming the holder's pid; metrics.jsonl and parameters as uninterrupted"),
    ("second_run_later", "3b. a second run started on a live workdir",
     "refused in one line naming the holder's pid and host; the first run's records as uninterrupted"),
    ("exploding_learning_rate", "4. learning rate 1e30, no clipping, a checkpoint every step",
     "exit != 0 naming the step, no traceback; no committed checkpoint holds NaN or Inf"),
    ("unreadable_eval_images", "5a. 2 of 11 eval images unreadable (image folder)",
     "eval/num_examples = 9 and eval/skipped_files = 2"),
    ("empty_class_folder", "5b. an empty class folder in the train split",
     "exit != 0, one line naming the folder, no traceback"),
    ("sigterm_during_start_up", "6. SIGTERM 1.5 s after launch (start-up)",
     "exit 75, the preemption line, no traceback, no checkpoint"),
    ("sigterm_between_log_steps", "7. SIGTERM after the first log line, at a step between two log steps",
     "exit 75; after the rerun, metrics.jsonl and parameters equal the uninterrupted run's"),
    ("async_save_failure", "8a. disk full (RLIMIT_FSIZE 64 KiB) after the first checkpoint (120 steps, one "
     "every 30)", "stops within one step of the failed write of step 60, one line naming the last intact "
     "checkpoint (30), no traceback, no probe file"),
    ("full_disk_at_start", "8b. disk full (RLIMIT_FSIZE 512 KiB) from the start",
     "exit != 0, one line 'is not writable', no traceback, no probe file"),
    ("too_many_tokens", "9a. num_tokens=100 with 16 patches", "exit != 0, one line naming the field, no traceback"),
    ("infinite_learning_rate", "9b. learning_rate=inf", "exit != 0, one line naming the field, no traceback"),
    ("indivisible_heads", "9c. num_heads=5 with width 32", "exit != 0, one line naming the field, no traceback"),
    ("unknown_dataset", "9d. dataset.name=bogus", "exit != 0, one line naming the field, no traceback"),
    ("empty_weight_file", "9e. init_from an empty .npz", "exit != 0, one line naming the file, no traceback"),
    ("kill_9_soak", "kill -9 at a random moment, then rerun (experiments/soak_kill.py, full quickstart model)",
     "every resumed run bit-identical to the uninterrupted one"),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="shorter schedule and a one-trial soak, for CI")
    parser.add_argument("--only", default="", help="comma-separated row names")
    parser.add_argument("--jobs", type=int, default=1, help="rows run at once")
    parser.add_argument("--output", default="", help="markdown results file (the full form: " + RESULTS + ")")
    args = parser.parse_args()
    names = [name for name, _, _ in ROWS]
    selected = args.only.split(",") if args.only else names
    unknown = sorted(set(selected) - set(names))
    if unknown:
        parser.error(f"--only: unknown rows {unknown}; expected some of {names}")
    output = args.output or ("" if args.reduced else RESULTS)
    root = tempfile.mkdtemp(prefix="fault_matrix_")
    matrix = Matrix(root, REDUCED if args.reduced else FULL, args.reduced)
    start = time.time()

    def run_row(row):
        name, fault, expected = row
        t = time.time()
        try:
            observed, passed = getattr(matrix, name)()
        except Exception as e:  # noqa: BLE001 -- a broken row is a failed row, not a crashed matrix
            observed, passed = f"harness error: {type(e).__name__}: {str(e)[:300]}", False
        print(f"{name}: {'PASS' if passed else 'FAIL'} ({time.time() - t:.0f} s) {observed}", flush=True)
        return fault, expected, observed or "as expected", passed

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(run_row, [row for row in ROWS if row[0] in selected]))
    if all(p for *_, p in results):
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"Workdirs and outputs of the runs kept in {root}", flush=True)
    table = ["| fault | expected | observed | verdict |", "|---|---|---|---|"]
    table += [f"| {f} | {e} | {o.replace('|', '/')} | {'pass' if p else '**FAIL**'} |" for f, e, o, p in results]
    passed = sum(p for *_, p in results)
    summary = (f"{passed} of {len(results)} rows pass ({'reduced' if args.reduced else 'full'} schedule "
               f"{matrix.schedule}, {time.time() - start:.0f} s).")
    print("\n".join(table) + "\n\n" + summary)
    if output:
        command = "python experiments/fault_matrix.py " + " ".join(sys.argv[1:])
        machine = f"{platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end"
        with open(output, "w", encoding="utf-8") as f:
            f.write(f"# Fault matrix (issue 16)\n\nCommand: `{command.strip()}` on {machine}.\n\n"
                    + "\n".join(table) + f"\n\n{summary}\n")
    sys.exit(0 if passed == len(results) else 1)


if __name__ == "__main__":
    main()
