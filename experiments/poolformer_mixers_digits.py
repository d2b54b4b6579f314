"""The small PoolFormer of configs/poolformer_quick.py on digits with each token mixer, and with
TokenLearner before its last stage, at equal steps; test accuracy and MACs of each.

  python experiments/poolformer_mixers_digits.py [--workdir=runs/poolformer_mixers]

Every variant is the quick config plus command-line overrides (shown in the table), run through
main.py from scratch with the same seed, data order and number of steps (the quick config's). MACs
are per image at the config's size: dot-product + convolution MACs of the traced program, and XLA's
count of the whole forward pass. Writes experiments/results/poolformer_mixers_digits.md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import ml_collections

from tokenlearner_jax import models
from tokenlearner_jax.models import flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIANTS = [
    ("pooling (PoolFormer)", []),
    ("identity", ["--config.model.mixers=('identity',)"]),
    ("attention", ["--config.model.mixers=('attention',)"]),
    ("pooling, pooling, attention", ["--config.model.mixers=('pooling','pooling','attention')"]),
    ("pooling + TokenLearner (8 tokens) before stage 3", ["--config.model.token_learner.enabled=True"]),
]


def run_variant(workdir, overrides):
    shutil.rmtree(workdir, ignore_errors=True)
    command = [sys.executable, "main.py", "--config=configs/poolformer_quick.py", f"--workdir={workdir}", *overrides]
    start = time.time()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.time() - start
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        config = ml_collections.ConfigDict(json.load(f))
    model = models.build(config.model)
    image_shape = (config.dataset.image_size,) * 2 + (3,)
    final = [r for r in records if "eval/accuracy" in r][-1]
    return dict(accuracy=final["eval/accuracy"], config=config, wall=wall,
                params=flops.count_params(flops.abstract_variables(model, image_shape)["params"]),
                matmul=flops.matmul_macs(model, image_shape), xla=records[0]["model/gmacs"] * 1e9)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "poolformer_mixers"))
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results",
                                                         "poolformer_mixers_digits.md"))
    args = parser.parse_args()
    lines = ["| token mixer | overrides of configs/poolformer_quick.py | test top-1 | params | MMACs (dot + conv) "
             "| MMACs (XLA) | wall time |", "|---|---|---|---|---|---|---|"]
    results = []
    for i, (name, overrides) in enumerate(VARIANTS):
        result = run_variant(os.path.join(args.workdir, str(i)), overrides)
        results.append(result)
        shown = " ".join(f"`{o}`" for o in overrides) or "(none)"
        lines.append(f"| {name} | {shown} | {100 * result['accuracy']:.2f}% | {result['params'] / 1e3:.0f}k | "
                     f"{result['matmul'] / 1e6:.1f} | {result['xla'] / 1e6:.1f} | {result['wall'] / 60:.1f} min |")
        print(lines[-1], flush=True)
    config = results[0]["config"]
    text = (f"# PoolFormer token mixers on digits\n\nCommand: `python experiments/poolformer_mixers_digits.py` "
            f"({os.cpu_count()} CPU cores shared with other jobs; wall times include start-up, compilation and "
            f"evaluation)\n\nEach run: {config.num_train_steps} steps of batch {config.batch_size} "
            f"({config.num_train_steps * config.batch_size / 1437:.0f} epochs) on the 1,437 training digits at "
            f"{config.dataset.image_size}x{config.dataset.image_size}, seed {config.seed}, top-1 on the 360 test "
            f"digits (one image = 0.28%), one run per row: differences of a few images are within what another "
            f"seed could change. Wall times depend on the machine's load at the time.\n\n"
            + "\n".join(lines) + "\n")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
