"""Start-up with and without jax's persistent compilation cache (main.py --compilation_cache_dir).

  python experiments/compilation_cache_benchmark.py [--runs=quickstart:30,vit_b16:2] [--rounds=2]

Each round runs main.py for every listed config three ways, one after the other on a new workdir:
'off' (--compilation_cache_dir=''), 'cold' (an empty cache directory, which this run fills) and
'warm' (the directory the cold run filled). It records the wall time of the whole command and
checks that the metrics (losses, accuracies) of the cold and warm runs equal those of the run
without the cache, value for value. ViT-B/16 runs on synthetic data at batch 8. Writes
experiments/results/compilation_cache.md.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import benchmark

# name -> (config file, overrides besides the step count)
CONFIGS = {
    "quickstart": ("configs/quickstart.py", ["--config.log_every_steps=10"]),
    "vit_b16": ("configs/vit_b16.py", ["--config.dataset.name=synthetic", "--config.batch_size=8",
                                       "--config.eval_batch_size=8", "--config.log_every_steps=1",
                                       "--config.dataset.synthetic_eval_size=8"]),
}
MODES = ("cold", "warm", "off")
TIMING_FIELDS = ("per_sec",)  # rates: examples and steps per second


def run_main(config: str, overrides: list, steps: int, workdir: str, cache_dir: str) -> float:
    command = [sys.executable, "main.py", f"--config={config}", f"--workdir={workdir}",
               f"--config.num_train_steps={steps}", f"--compilation_cache_dir={cache_dir}", *overrides]
    start = time.perf_counter()
    subprocess.run(command, cwd=benchmark.ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def metric_values(workdir: str) -> list:
    """Every metric of metrics.jsonl except the timing ones, as (step, name, value)."""
    values = []
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            values += [(record["step"], k, v) for k, v in sorted(record.items())
                       if k != "step" and not any(t in k for t in TIMING_FIELDS)]
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="quickstart:30,vit_b16:2", help="NAME:STEPS, of " + str(list(CONFIGS)))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(benchmark.RESULTS, "compilation_cache.md"))
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="compilation_cache_benchmark_")
    uptime_before = benchmark.uptime()
    rows = []
    try:
        for spec in args.runs.split(","):
            name, steps = spec.split(":")
            config, overrides = CONFIGS[name]
            times, equal = {mode: [] for mode in MODES}, True
            for r in range(args.rounds):
                cache_dir = os.path.join(scratch, f"cache_{name}_{r}")
                metrics = {}
                for mode in MODES:
                    workdir = os.path.join(scratch, f"{name}_{r}_{mode}")
                    times[mode].append(run_main(config, overrides, int(steps), workdir,
                                                "" if mode == "off" else cache_dir))
                    metrics[mode] = metric_values(workdir)
                    shutil.rmtree(workdir)
                    print(f"{name} round {r} {mode}: {times[mode][-1]:.1f} s", flush=True)
                equal &= metrics["cold"] == metrics["off"] == metrics["warm"] and bool(metrics["off"])
            median = {mode: float(np.median(t)) for mode, t in times.items()}
            rows.append(f"| {name} ({config}, {steps} steps) | " + " | ".join(
                f"{median[m]:.1f} ({min(times[m]):.1f}-{max(times[m]):.1f})" for m in MODES) +
                f" | {median['off'] / median['warm']:.2f} | {'yes' if equal else 'NO'} |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    uptime_after = benchmark.uptime()
    text = "\n".join([
        "# Start-up with jax's persistent compilation cache",
        "",
        f"Command: `python experiments/compilation_cache_benchmark.py --runs={args.runs} --rounds={args.rounds}`; "
        f"{benchmark.machine_description()}; `{uptime_before}` before, `{uptime_after}` after.",
        "",
        "Wall seconds of the whole `main.py` command (imports, data, init, compilation, the steps, the final "
        "evaluation and checkpoint), median (min-max) of the rounds. 'cold': an empty cache directory, filled "
        "by that run; 'warm': the same directory again; 'off': `--compilation_cache_dir=''`. Same metrics: "
        "every loss and accuracy in metrics.jsonl of the cold and warm runs equals the run without the cache.",
        "",
        "| run | cold s | warm s | off s | off / warm | same metrics |",
        "|---|---|---|---|---|---|",
        *rows, ""])
    print(text)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
