"""Trains configs/nest_digits.py through main.py, records its test accuracy, and renders class-activation
maps of the final checkpoint with `python -m tokenlearner_jax.visualize class_attention`.

  python experiments/nest_digits.py [--workdir=runs/nest_digits] [--num_images=8]

A workdir that already holds the finished run (its last evaluation at the config's final step) is
reused, not retrained. Writes experiments/results/nest_digits.md (eval top-1 at every evaluation, the
wall time when it trained, the median training speed) and experiments/results/nest_digits_class_attention.png.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = "configs/nest_digits.py"


def read_metrics(workdir):
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "nest_digits"))
    parser.add_argument("--num_images", type=int, default=8)
    parser.add_argument("--results", default=os.path.join(ROOT, "experiments", "results"))
    args = parser.parse_args()
    spec = importlib.util.spec_from_file_location("nest_digits", os.path.join(ROOT, CONFIG))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    steps = module.get_config().num_train_steps
    evals = [r for r in read_metrics(args.workdir) if "eval/accuracy" in r]
    wall = "not measured: an existing run was reused"
    if not evals or evals[-1]["step"] != steps:
        shutil.rmtree(args.workdir, ignore_errors=True)
        start = time.time()
        subprocess.run([sys.executable, "main.py", f"--config={CONFIG}", f"--workdir={args.workdir}"], cwd=ROOT,
                       check=True)
        wall = f"{(time.time() - start) / 60:.1f} min for the whole command"
    records = read_metrics(args.workdir)
    evals = [r for r in records if "eval/accuracy" in r]
    speed = sorted(r["train/steps_per_sec"] for r in records if "train/steps_per_sec" in r)
    lines = ["| step | eval top-1 | eval loss |", "|---|---|---|"]
    lines += [f"| {r['step']} | {100 * r['eval/accuracy']:.2f}% | {r['eval/loss']:.4f} |" for r in evals]
    text = (f"# NesT on the bundled digits\n\nCommand: `python experiments/nest_digits.py --workdir=W`, which runs "
            f"`python main.py --config={CONFIG} --workdir=W` unless W holds the finished run\n\n" + "\n".join(lines) +
            f"\n\nFinal: {100 * evals[-1]['eval/accuracy']:.2f}% top-1 on {int(evals[-1]['eval/num_examples'])} "
            f"digits test images after {evals[-1]['step']} steps of batch 128; wall time {wall}, median "
            f"{speed[len(speed) // 2]:.2f} training steps/s ({os.cpu_count()} CPU cores shared with other jobs).\n")
    with open(os.path.join(args.results, "nest_digits.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)
    with tempfile.TemporaryDirectory() as output:
        subprocess.run([sys.executable, "-m", "tokenlearner_jax.visualize", "class_attention",
                        f"--config={CONFIG}", f"--workdir={args.workdir}", f"--num_images={args.num_images}", f"--output={output}"],
                       cwd=ROOT, check=True)
        shutil.copy(os.path.join(output, "class_attention.png"),
                    os.path.join(args.results, "nest_digits_class_attention.png"))


if __name__ == "__main__":
    main()
