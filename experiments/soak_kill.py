"""Soak test of exact resume: kill -9 a quickstart run at random moments, restart it, compare.

  python experiments/soak_kill.py [--trials=10 --steps=300 --checkpoint_every=50 --seed=0]

Runs the quickstart config (shortened to `steps` steps, checkpointing every `checkpoint_every`) once
uninterrupted, then `trials` times: start it, SIGKILL it at a uniformly random moment of its
expected run time, restart the same command until it finishes, and compare the final parameters and
metrics.jsonl with the uninterrupted run. Writes experiments/results/soak_kill.md.
"""

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax.train import checkpoint, metrics_log  # noqa: E402


def command(workdir, args):
    return [sys.executable, "main.py", "--config=configs/quickstart.py", f"--workdir={workdir}",
            f"--config.num_train_steps={args.steps}", f"--config.checkpoint_every_steps={args.checkpoint_every}",
            f"--config.eval_every_steps={args.steps}", "--config.log_every_steps=25",
            # No compilation cache: every run compiles as the timed reference did, so the kill moments,
            # drawn over the reference's duration, fall across the whole run, compilation included.
            "--compilation_cache_dir="]


def final_params(workdir):
    return jax.tree.leaves(checkpoint.read_state(os.path.join(workdir, "checkpoints"))[1]["params"])


def comparable_metrics(workdir):
    return [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in metrics_log.read_metrics(workdir)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--checkpoint_every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "soak_kill.md"))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    root = tempfile.mkdtemp(prefix="soak_")
    reference = os.path.join(root, "reference")
    start = time.time()
    subprocess.run(command(reference, args), cwd=ROOT, env=env, check=True, capture_output=True)
    duration = time.time() - start
    expected_params, expected_metrics = final_params(reference), comparable_metrics(reference)

    rows, identical = [], 0
    for trial in range(args.trials):
        workdir = os.path.join(root, f"trial{trial}")
        kill_after = rng.uniform(0.0, duration)
        proc = subprocess.Popen(command(workdir, args), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=kill_after)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
        checkpoints = os.path.join(workdir, "checkpoints")
        committed = sorted(int(d) for d in os.listdir(checkpoints) if d.isdigit()) if os.path.isdir(checkpoints) else []
        partial = os.path.isdir(checkpoints) and any(d.endswith("-tmp") for d in os.listdir(checkpoints))
        subprocess.run(command(workdir, args), cwd=ROOT, env=env, check=True, capture_output=True)
        same_params = all(np.array_equal(a, b) for a, b in zip(final_params(workdir), expected_params))
        same_metrics = comparable_metrics(workdir) == expected_metrics
        identical += same_params and same_metrics
        rows.append(f"| {trial} | {kill_after:.1f} | {'yes' if killed else 'no (finished first)'} | "
                    f"{committed[-1] if committed else '-'} | {'yes' if partial else 'no'} | "
                    f"{'yes' if same_params else 'NO'} | {'yes' if same_metrics else 'NO'} |")
        print(rows[-1], flush=True)
        shutil.rmtree(workdir)
    shutil.rmtree(root)
    table = "\n".join(["| trial | kill after (s) | killed | last committed step | partial write left | "
                       "params bit-identical | metrics identical |", "|---|---|---|---|---|---|---|"] + rows)
    summary = (f"{identical} of {args.trials} resumed runs ended bit-identical to the uninterrupted run "
               f"({args.steps} steps, checkpoint every {args.checkpoint_every}, uninterrupted run {duration:.0f} s).")
    print(summary)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(f"# kill -9 soak test\n\nCommand: `python experiments/soak_kill.py --trials={args.trials} "
                f"--steps={args.steps} --checkpoint_every={args.checkpoint_every} --seed={args.seed}`\n\n"
                f"{table}\n\n{summary}\n")


if __name__ == "__main__":
    main()
