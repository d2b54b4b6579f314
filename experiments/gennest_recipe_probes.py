"""Does GenNesT's collapse on the digits depend on the optimizer recipe? Short GenNesT runs with other
learning rates and betas, against the first steps of the runs of experiments/gennest_vs_sagan.py.

  python experiments/gennest_recipe_probes.py [--steps=500]   (after experiments/gennest_vs_sagan.py)

Each probe is `main.py --config=configs/gan_digits.py` with the overrides in PROBES, in runs/gennest_probe_NAME,
all probes at the same time; the reference rows are read from runs/gan_digits and runs/gan_digits_sagan at the
same steps (their checkpoints of those steps). Reports the Fréchet distance (eval/fd, the classifier features
of configs/gan_digits.py:classifier) and the spread of 36 EMA samples (per-pixel standard deviation across the
samples, in [0, 1] pixel units, averaged over pixels). Writes experiments/results/gennest_recipe_probes.md.
"""

import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax import visualize  # noqa: E402
from tokenlearner_jax.train.metrics_log import read_metrics  # noqa: E402

CONFIG = "configs/gan_digits.py"
# name -> (what it is, main.py overrides of configs/gan_digits.py)
PROBES = {
    "equal_lr_b2_099": ("generator and discriminator both at 1e-4, b2 0.99 (TransGAN's Adam)", [
        "--config.gan.discriminator_optimizer.learning_rate=1e-4", "--config.gan.generator_optimizer.b2=0.99",
        "--config.gan.discriminator_optimizer.b2=0.99"]),
    "slow_generator": ("generator at 5e-5, discriminator at 4e-4 (b2 0.9)", [
        "--config.gan.generator_optimizer.learning_rate=5e-5"]),
}
REFERENCES = {"GenNesT, SAGAN's recipe (gennest_vs_sagan.md)": "gan_digits",
              "SAGAN-style, SAGAN's recipe (gennest_vs_sagan.md)": "gan_digits_sagan"}


def fd_by_step(workdir) -> dict:
    return {r["step"]: r["eval/fd"] for r in read_metrics(workdir) if "eval/fd" in r}


def spread(workdir, step) -> float:
    images = visualize.generator_samples(workdir, 36, seed=0, step=step)["images"]
    return float(images.std(axis=0).mean())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--output", default=os.path.join(ROOT, "experiments", "results", "gennest_recipe_probes.md"))
    args = parser.parse_args()
    workdirs = {name: os.path.join(args.runs, f"gennest_probe_{name}") for name in PROBES}
    began = time.time()
    procs = {}
    for name, (_, flags) in PROBES.items():
        log = open(workdirs[name] + ".log", "a", encoding="utf-8")  # pylint: disable=consider-using-with
        procs[name] = subprocess.Popen(
            [sys.executable, "main.py", f"--config={CONFIG}", f"--workdir={workdirs[name]}",
             f"--config.num_train_steps={args.steps}", "--config.checkpoint_every_steps=250", *flags],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    for name, proc in procs.items():
        if proc.wait():
            raise SystemExit(f"probe {name} failed; see {workdirs[name]}.log")
    wall = (time.time() - began) / 60

    rows = [(label, os.path.join(args.runs, run), "") for label, run in REFERENCES.items()]
    rows += [(f"GenNesT, {what}", workdirs[name], " ".join(PROBES[name][1])) for name, (what, _) in PROBES.items()]
    steps = [s for s in (250, 500, 750, 1000) if s <= args.steps]
    lines = ["| run | " + " | ".join(f"FD at {s}" for s in steps) + f" | spread at {args.steps} |",
             "|---|" + "---|" * (len(steps) + 1)]
    for label, workdir, _ in rows:
        fd = fd_by_step(workdir)
        lines.append(f"| {label} | " + " | ".join(f"{fd[s]:.3f}" if s in fd else "-" for s in steps)
                     + f" | {spread(workdir, args.steps):.3f} |")
    load = os.getloadavg()
    text = "\n".join([
        "# GenNesT's collapse on the digits against the optimizer recipe", "",
        f"Command: `python experiments/gennest_recipe_probes.py --steps={args.steps}` (after "
        "`python experiments/gennest_vs_sagan.py`, whose runs give the reference rows at the same steps). "
        f"Each probe: `main.py --config={CONFIG}` with the overrides below, {args.steps} steps, batch 64, one seed; "
        "everything else as in experiments/results/gennest_vs_sagan.md. Spread: 36 EMA samples, per-pixel standard "
        "deviation across samples in [0, 1] units averaged over pixels (0.184 for the first 36 test digits; "
        "near 0: one image for every latent).", "",
        *lines, "",
        *[f"- `{name}`: `{' '.join(flags)}`" for name, (_, flags) in PROBES.items()], "",
        f"Wall time of the probes side by side: {wall:.1f} min on {os.cpu_count()} CPU cores (load average "
        f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} when this file was written).", ""])
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
