"""MACs and forward time of ViT-B/16 against ViT-B/16 with TokenLearner at 1/4, 1/2 and 3/4 of the depth.

  python experiments/benchmark_tokenlearner.py [--batch_size=8 --repeats=7]   (or: make benchmark)

MACs are XLA's cost analysis of the compiled forward pass (flops / 2) for one 224x224 image. Times
are medians of `repeats` forward passes of a batch, measured round-robin over the models in one
process so that every model sees the same machine load; ratios are against ViT-B/16 of the same run.
Writes the table to experiments/results/benchmark_tokenlearner.md.
"""

import argparse
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax import models
from tokenlearner_jax.models import flops

MODELS = [("ViT-B/16", None, None)] + [
    (f"TL B/16, {tokens} tokens at {name}", location, tokens)
    for tokens in (8, 16) for name, location in (("1/4", 0.25), ("1/2", 0.5), ("3/4", 0.75))]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results",
                                                         "benchmark_tokenlearner.md"))
    args = parser.parse_args()

    images = jnp.asarray(np.random.RandomState(0).rand(args.batch_size, 224, 224, 3), jnp.float32)
    entries = []
    for name, location, tokens in MODELS:
        model = models.build(models.config("vit", variant="B/16", token_learner=dict(enabled=location is not None, location=location or 0.5, num_tokens=tokens or 8)))
        variables = jax.jit(model.init)(jax.random.key(0), images[:1])
        forward = jax.jit(lambda v, x, model=model: model.apply(v, x))
        forward(variables, images).block_until_ready()  # compile
        entries.append(dict(name=name, macs=flops.forward_macs(model, (224, 224, 3)), forward=forward,
                            variables=variables, times=[]))
    for _ in range(args.repeats):
        for entry in entries:
            start = time.perf_counter()
            entry["forward"](entry["variables"], images).block_until_ready()
            entry["times"].append(time.perf_counter() - start)

    base = entries[0]
    lines = [f"Device: {jax.devices()[0].device_kind} ({jax.device_count()} device(s), {os.cpu_count()} CPU cores, "
             f"{platform.machine()}), jax {jax.__version__}; batch {args.batch_size} at 224x224, float32, "
             f"median of {args.repeats} round-robin runs.", "",
             "| model | GMACs / image | MACs vs ViT-B/16 | forward ms / batch (median) | time vs ViT-B/16 |",
             "|---|---|---|---|---|"]
    for entry in entries:
        median = float(np.median(entry["times"]))
        lines.append(f"| {entry['name']} | {entry['macs'] / 1e9:.2f} | {entry['macs'] / base['macs']:.2f} | "
                     f"{median * 1e3:.0f} | {median / float(np.median(base['times'])):.2f} |")
    table = "\n".join(lines)
    print(table)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("# ViT-B/16 with and without TokenLearner\n\nCommand: `python experiments/benchmark_tokenlearner.py "
                f"--batch_size={args.batch_size} --repeats={args.repeats}`\n\n{table}\n")


if __name__ == "__main__":
    main()
