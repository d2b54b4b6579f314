"""Runs the quickstart exactly as `make train` does and records its test accuracy and wall time.

  python experiments/quickstart_accuracy.py [--workdir=runs/quickstart_experiment]

Writes experiments/results/quickstart.md with the eval accuracy at every evaluation, the final
top-1 on the 360-image digits test split, and the wall time of the whole command (start-up,
compilation, training, evaluations and checkpoints included).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "quickstart_experiment"))
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "quickstart.md"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    command = [sys.executable, "main.py", "--config=configs/quickstart.py", f"--workdir={args.workdir}"]
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True)
    wall = time.time() - start
    with open(os.path.join(args.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    evals = [r for r in records if "eval/accuracy" in r]
    train_speed = [r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r]
    lines = ["| step | eval top-1 | eval loss |", "|---|---|---|"]
    lines += [f"| {r['step']} | {100 * r['eval/accuracy']:.2f}% | {r['eval/loss']:.4f} |" for r in evals]
    summary = (f"Final: {100 * evals[-1]['eval/accuracy']:.2f}% top-1 on {int(evals[-1]['eval/num_examples'])} "
               f"digits test images after {evals[-1]['step']} steps; wall time {wall / 60:.1f} min for the whole "
               f"command on {os.cpu_count()} CPU cores (median {sorted(train_speed)[len(train_speed) // 2]:.1f} "
               f"steps/s).")
    text = "\n".join(lines) + "\n\n" + summary
    print(text)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(f"# Quickstart on the bundled digits\n\nCommand: `{' '.join(command[1:3])} --workdir=W` "
                f"(what `make train` runs)\n\n{text}\n")


if __name__ == "__main__":
    main()
