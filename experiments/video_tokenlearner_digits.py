"""ViViT with and without TokenLearner on the bundled moving digits: accuracy and MACs side by side.

  python experiments/video_tokenlearner_digits.py [--workdir=runs/video_digits] [--sequential]

Trains configs/quickstart_video.py exactly as `python main.py --config=configs/quickstart_video.py`
runs it (ViViT with TokenLearner learning 8 tokens per temporal slice before layer 1 of 4), and the
same config with `--config.model.token_learner.enabled=False` (the plain ViViT), both at once unless
--sequential. Reads each run's metrics.jsonl (eval top-1 on the 1,440 test clips at every evaluation,
the parameter count and the XLA-counted GMACs logged by the trainer), adds the dot + conv MACs of the
traced forward pass (models/flops.matmul_macs), the wall time and the CPU time of each command, and
writes experiments/results/video_tokenlearner_digits.md. The first row is the video quickstart's
result quoted in the README.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/quickstart_video.py"
RUNS = (("ViViT + TokenLearner (8 tokens per slice before layer 1)", "tokenlearner", {}),
        ("ViViT (no TokenLearner)", "vivit", {"model.token_learner.enabled": False}))


def _flags(overrides: dict) -> list:
    return [f"--config.{key}={value}" for key, value in overrides.items()]


def _matmul_mmacs(overrides: dict) -> float:
    from tokenlearner_jax import models  # pylint: disable=import-outside-toplevel
    from tokenlearner_jax.models import flops  # pylint: disable=import-outside-toplevel

    spec = importlib.util.spec_from_file_location("config", os.path.join(ROOT, CONFIG))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value
    shape = (config.dataset.num_frames, config.dataset.image_size, config.dataset.image_size, 3)
    return flops.matmul_macs(models.build(config.model), shape) / 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(ROOT, "runs", "video_digits"))
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results",
                                                         "video_tokenlearner_digits.md"))
    parser.add_argument("--sequential", action="store_true", help="one run after the other")
    args = parser.parse_args()

    commands, procs, results = {}, {}, {}
    for _, key, overrides in RUNS:
        workdir = os.path.join(args.workdir, key)
        shutil.rmtree(workdir, ignore_errors=True)
        commands[key] = ["main.py", f"--config={CONFIG}", f"--workdir={workdir}", *_flags(overrides)]
    os.makedirs(args.workdir, exist_ok=True)
    for _, key, _ in RUNS:
        log = open(os.path.join(args.workdir, f"{key}.log"), "w", encoding="utf-8")
        procs[key] = (subprocess.Popen([sys.executable, *commands[key]], cwd=ROOT, stdout=log,
                                       stderr=subprocess.STDOUT), time.time())
        if args.sequential:
            _, status, usage = os.wait4(procs[key][0].pid, 0)
            results[key] = (status, time.time() - procs[key][1], usage.ru_utime + usage.ru_stime)
    for key, (proc, start) in procs.items():
        if key not in results:
            _, status, usage = os.wait4(proc.pid, 0)
            results[key] = (status, time.time() - start, usage.ru_utime + usage.ru_stime)
    for key, (status, _, _) in results.items():
        if status:
            raise SystemExit(f"{key} failed (status {status}); see {args.workdir}/{key}.log")

    rows, curves = [], []
    for label, key, overrides in RUNS:
        with open(os.path.join(args.workdir, key, "metrics.jsonl"), encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        model = next(r for r in records if "model/gmacs" in r)
        evals = [r for r in records if "eval/accuracy" in r]
        _, wall, cpu = results[key]
        flags = " ".join(f"`{flag}`" for flag in _flags(overrides)) or "(none)"
        rows.append(f"| {label} | {flags} | {100 * evals[-1]['eval/accuracy']:.2f}% | "
                    f"{100 * evals[-1]['eval/top5_accuracy']:.2f}% | {model['model/num_params'] / 1e3:.0f}k | "
                    f"{_matmul_mmacs(overrides):.1f} | {1e3 * model['model/gmacs']:.1f} | {wall / 60:.1f} min | "
                    f"{cpu / 60:.1f} min |")
        curves.append(f"{label}: " + ", ".join(f"step {r['step']} {100 * r['eval/accuracy']:.2f}%" for r in evals))
    final = evals[-1]
    header = ["| model | overrides of " + CONFIG + " | test top-1 | test top-5 | params | MMACs / clip (dot + conv) |"
              " MMACs / clip (XLA) | wall time | CPU time |", "|---|---|---|---|---|---|---|---|---|"]
    text = "\n".join(header + rows) + "\n\nEval top-1 during training:\n\n" + "\n".join(f"- {c}" for c in curves)
    together = "one after the other" if args.sequential else "at the same time"
    text += (f"\n\nTest split: {int(final['eval/num_examples'])} clips (40 classes: digit x direction of motion, "
             f"chance 2.5%), evaluated on the centred 8-frame clip. Runs {together} "
             f"on {os.cpu_count()} CPU cores; wall and CPU time of each whole command (start-up, compilation, "
             f"training, evaluations, checkpoints; the first run also writes the clips if they are not cached).")
    print(text)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("# ViViT with and without TokenLearner on the moving digits\n\n"
                f"Command: `python experiments/video_tokenlearner_digits.py`, which runs "
                f"`python {' '.join(commands['tokenlearner'][:2])} --workdir=W [overrides]`\n\n{text}\n")


if __name__ == "__main__":
    main()
