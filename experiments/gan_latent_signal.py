"""Where does a generator's latent stop mattering? Per layer, the share of its activations that varies
with the latent, at initialisation and in trained checkpoints.

  python experiments/gan_latent_signal.py --workdirs=runs/gan_digits,runs/gan_digits_sagan

For every top-level layer of the generator (models/gennest.py, models/sagan_generator.py), on 64 latents:
`across` is the standard deviation across the latents, averaged over the layer's positions and channels,
and `total` the standard deviation of all its values; `across / total` is near 1 when the activations are
mostly the latent's doing and near 0 when they are a constant the generator makes whatever the latent (a
collapsed generator). Each workdir's EMA generator (its latest checkpoint) is compared with a freshly
initialised generator of the same config (seed 0). Writes experiments/results/gan_latent_signal.md.
"""

import argparse
import os
import sys

import jax
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax.tasks import gan  # noqa: E402


def layer_signal(generator, variables, count: int = 64, seed: int = 3) -> list:
    """[(layer name, across, total)] of the generator's top-level layers and its output, in call order."""
    latents = jax.random.normal(jax.random.key(seed), (count, generator.latent_dim))
    images, state = generator.apply(variables, latents, train=False, mutable=["intermediates"],
                                    capture_intermediates=lambda module, method: len(module.path) <= 1)
    rows = []
    for name, value in state["intermediates"].items():
        if name == "__call__" or "__call__" not in value:
            continue
        values = np.asarray(value["__call__"][0], np.float64).reshape(count, -1)
        rows.append((name, float(values.std(0).mean()), float(values.std())))
    values = np.asarray(images, np.float64).reshape(count, -1)
    rows.append(("output image", float(values.std(0).mean()), float(values.std())))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdirs", required=True, help="comma-separated workdirs of gan runs")
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "gan_latent_signal.md"))
    args = parser.parse_args()
    lines = ["# How much of a generator's activations vary with its latent", "",
             f"Command: `python experiments/gan_latent_signal.py --workdirs={args.workdirs}`", "",
             "Per top-level layer, on 64 latents: `across` = standard deviation across the latents (mean over "
             "positions and channels), `total` = standard deviation of all values, and their ratio (near 1: the "
             "latent's doing; near 0: a constant made whatever the latent). `init`: a freshly initialised "
             "generator of the same config (seed 0); `trained`: the workdir's EMA generator at its latest "
             "checkpoint.", ""]
    for workdir in args.workdirs.split(","):
        generator, trained, step = gan.restore_generator(workdir)
        initial = generator.init(jax.random.key(0), np.zeros((1, generator.latent_dim), np.float32))
        initial.pop("intermediates", None)
        lines += [f"## `{workdir}`: {type(generator).__name__}, step {step}", "",
                  "| layer | init across / total | init ratio | trained across / total | trained ratio |",
                  "|---|---|---|---|---|"]
        for (name, a0, t0), (_, a1, t1) in zip(layer_signal(generator, initial), layer_signal(generator, trained)):
            lines.append(f"| {name} | {a0:.3f} / {t0:.3f} | {a0 / t0:.3f} | {a1:.3f} / {t1:.3f} | {a1 / t1:.3f} |")
        lines.append("")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
