"""Trains configs/maxvit_digits.py (a small MaxViT on the bundled digits) with `main.py`, as its
docstring says, and records its test accuracy, parameters, MACs and wall time.

  python experiments/maxvit_digits.py [--workdir=runs/maxvit_digits_experiment] [-- --config.FIELD=VALUE ...]

Writes experiments/results/maxvit_digits.md (or --output): the eval accuracy at every evaluation and a
summary line with the load average of the machine during the run (other jobs slow it down).
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
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "maxvit_digits_experiment"))
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "maxvit_digits.md"))
    parser.add_argument("overrides", nargs="*", help="extra main.py flags, after --")
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    command = [sys.executable, "main.py", "--config=configs/maxvit_digits.py", f"--workdir={args.workdir}",
               *args.overrides]
    start, load_start = time.time(), os.getloadavg()[0]
    subprocess.run(command, cwd=ROOT, check=True)
    wall, load_end = time.time() - start, os.getloadavg()[1]
    with open(os.path.join(args.workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    model = next(r for r in records if "model/num_params" in r)
    evals = [r for r in records if "eval/accuracy" in r]
    speed = sorted(r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r)
    lines = ["| step | eval top-1 | eval loss |", "|---|---|---|"]
    lines += [f"| {r['step']} | {100 * r['eval/accuracy']:.2f}% | {r['eval/loss']:.4f} |" for r in evals]
    summary = (f"Final: {100 * evals[-1]['eval/accuracy']:.2f}% top-1 on {int(evals[-1]['eval/num_examples'])} "
               f"digits test images after {evals[-1]['step']} steps; {model['model/num_params'] / 1e6:.3f}M "
               f"parameters, {1e3 * model['model/gmacs']:.1f} MMACs per image (XLA); wall time {wall / 60:.1f} min "
               f"for the whole command on {os.cpu_count()} CPU cores (median {speed[len(speed) // 2]:.2f} steps/s; "
               f"load average {load_start:.1f} at the start, {load_end:.1f} over the last 5 min).")
    text = "\n".join(lines) + "\n\n" + summary
    print(text)
    shown = " ".join(command[1:3] + ["--workdir=W"] + args.overrides)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(f"# MaxViT on the bundled digits\n\nCommand: `python {shown}` "
                f"(via `python experiments/maxvit_digits.py`)\n\n{text}\n")


if __name__ == "__main__":
    main()
