"""GenNesT against the SAGAN-style convolutional generator on the bundled digits: Fréchet distance against
steps and sample grids at equal steps.

  python experiments/gennest_vs_sagan.py [--runs=runs] [--steps=N]

Trains, through main.py, the FD classifier (configs/gan_digits.py:classifier) and then both GANs at once
(configs/gan_digits.py and configs/gan_digits.py:sagan: the same discriminator, data order, steps, batch,
optimizers and EMA; generators of 264k and 257k parameters), for the config's 1500 steps or --steps. A
workdir holding a finished run is reused; one holding checkpoints resumes from its latest (exact resume; the
learning rates are constant, so a run's steps do not depend on its total), and the table says so.
Writes experiments/results/gennest_vs_sagan.md (eval/fd of the EMA generator at every evaluation, the
parameter counts, CPU and wall time of each run and the machine's load), gennest_vs_sagan_fd.png and
gennest_vs_sagan_samples.png (both generators' samples from the same latents at the same steps).
"""

import argparse
import os
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
CONFIG = "configs/gan_digits.py"
RUNS = {"GenNesT": "", "SAGAN-style": "sagan"}  # name -> config argument

from tokenlearner_jax import data, visualize  # noqa: E402
from tokenlearner_jax.recipes import sweeps  # noqa: E402
from tokenlearner_jax.train.metrics_log import read_metrics  # noqa: E402


def load_config(arg):
    return sweeps.load_module(os.path.join(ROOT, CONFIG)).get_config(arg)


def finished(workdir, steps, key) -> bool:
    return (os.path.exists(os.path.join(workdir, "metrics.jsonl"))
            and any(r["step"] == steps and key in r for r in read_metrics(workdir)))


def latest_checkpoint(workdir) -> int:
    directory = os.path.join(workdir, "checkpoints")
    return max((int(d) for d in os.listdir(directory) if d.isdigit()), default=0) if os.path.isdir(directory) else 0


def start(arg, workdir, *flags):
    spec = f"{CONFIG}:{arg}" if arg else CONFIG
    log = open(workdir + ".log", "a", encoding="utf-8")  # pylint: disable=consider-using-with
    return subprocess.Popen([sys.executable, "main.py", f"--config={spec}", f"--workdir={workdir}", *flags],
                            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait(proc) -> dict:
    """Waits for `proc`; returns its wall time and CPU time (user + sys) in minutes."""
    began = time.time()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status):
        raise SystemExit(f"{proc.args} failed; see its log beside the workdir")
    return dict(cpu=(usage.ru_utime + usage.ru_stime) / 60, wait=(time.time() - began) / 60)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=os.path.join(ROOT, "runs"))
    parser.add_argument("--results", default=os.path.join(ROOT, "experiments", "results"))
    parser.add_argument("--steps", type=int, default=0, help="training steps of each GAN (default: the config's)")
    args = parser.parse_args()
    os.makedirs(args.runs, exist_ok=True)
    classifier = load_config("classifier")
    gan = load_config(None)
    config_steps, gan.num_train_steps = gan.num_train_steps, args.steps or gan.num_train_steps
    if os.path.abspath(gan.gan.fd.path) != os.path.abspath(os.path.join(args.runs, "gan_digits_classifier")):
        raise SystemExit(f"{CONFIG}'s fd.path is {gan.gan.fd.path}: run this script from the repository root with "
                         f"--runs=runs")
    classifier_dir = os.path.join(args.runs, "gan_digits_classifier")
    times = {}
    if not finished(classifier_dir, classifier.num_train_steps, "eval/accuracy"):
        times["classifier"] = wait(start("classifier", classifier_dir))
    workdirs = {name: os.path.join(args.runs, "gan_digits" + (f"_{arg}" if arg else "")) for name, arg in RUNS.items()}
    began = time.time()
    todo = [name for name in RUNS if not finished(workdirs[name], gan.num_train_steps, "eval/fd")]
    resumed = {name: latest_checkpoint(workdirs[name]) for name in todo}
    procs = {name: start(RUNS[name], workdirs[name], f"--config.num_train_steps={gan.num_train_steps}")
             for name in todo}
    for name, proc in procs.items():
        times[name] = wait(proc)
    wall = (time.time() - began) / 60

    records = {name: read_metrics(w) for name, w in workdirs.items()}
    fd = {name: {r["step"]: r["eval/fd"] for r in rs if "eval/fd" in r} for name, rs in records.items()}
    steps = sorted(set.intersection(*(set(v) for v in fd.values())))
    params = {name: int(next(r["model/generator_params"] for r in rs if "model/generator_params" in r))
              for name, rs in records.items()}
    disc = int(next(r["model/discriminator_params"] for r in records["GenNesT"] if "model/discriminator_params" in r))
    speed = {name: float(np.median([r["train/steps_per_sec"] for r in rs if "train/steps_per_sec" in r]))
             for name, rs in records.items()}
    accuracy = next(r["eval/accuracy"] for r in reversed(read_metrics(classifier_dir)) if "eval/accuracy" in r)

    lines = ["| step | " + " | ".join(f"{n} FD" for n in RUNS) + " |", "|---|" + "---|" * len(RUNS)]
    lines += [f"| {s} | " + " | ".join(f"{fd[n][s]:.3f}" for n in RUNS) + " |" for s in steps]
    best = {n: min(fd[n].items(), key=lambda kv: kv[1]) for n in RUNS}
    run_lines = [f"- {n}: {params[n]:,} generator parameters; median {speed[n]:.2f} training steps/s; best FD "
                 f"{best[n][1]:.3f} at step {best[n][0]}" +
                 (f"; {times[n]['cpu']:.1f} CPU min (user + sys) for the main.py command" if n in times else
                  "; an existing finished run was reused") +
                 (f" (resumed from the checkpoint of step {resumed[n]} left by an earlier invocation: "
                  f"this time covers steps {resumed[n] + 1}-{gan.num_train_steps})" if resumed.get(n) else "")
                 for n in RUNS]
    load = os.getloadavg()
    text = (f"# GenNesT against a SAGAN-style generator on the bundled digits\n\n"
            f"Command: `python experiments/gennest_vs_sagan.py{f' --steps={args.steps}' if args.steps else ''}` (main.py with `{CONFIG}` and `{CONFIG}:sagan`, run "
            f"at the same time, after `{CONFIG}:classifier`). Same SAGAN-style discriminator ({disc:,} parameters), "
            f"hinge loss, Adam 1e-4 / 4e-4 (b1 0, b2 0.9), batch {gan.batch_size}, {gan.num_train_steps} steps"
            + (f" (`--steps={gan.num_train_steps}`: the config's {config_steps} did not fit the time this machine had)"
               if gan.num_train_steps != config_steps else "") +
            f", EMA 0.999, data order and seed; 16x16 digits in [-1, 1].\n\n"
            f"FD: the Fréchet distance of the EMA generator's {int(records['GenNesT'][-1].get('eval/fd_examples', 360))} "
            f"samples against the 360 test digits, in the 64-d pre-logit features of the classifier "
            f"`{CONFIG}:classifier` (NesT, {100 * accuracy:.2f}% top-1 on those digits): not an FID, and comparable "
            f"only within this table. One seed per generator.\n\n" + "\n".join(lines) + "\n\n" + "\n".join(run_lines) +
            "\n\nWall time of the two GAN runs side by side in this invocation: "
            + (f"{wall:.1f} min" if procs else "not measured (reused)") +
            f", on {os.cpu_count()} CPU cores shared with other jobs (load average {load[0]:.1f} / {load[1]:.1f} / "
            f"{load[2]:.1f} when this file was written).\n\n"
            f"![FD against steps](gennest_vs_sagan_fd.png)\n\n![samples](gennest_vs_sagan_samples.png)\n")

    fig, ax = plt.subplots(figsize=(6, 4))
    for n in RUNS:
        ax.plot(sorted(fd[n]), [fd[n][s] for s in sorted(fd[n])], "o-", label=f"{n} ({params[n] / 1e3:.0f}k)")
    ax.set_xlabel("step")
    ax.set_ylabel("FD (classifier features)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("EMA generator against the 360 test digits", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(args.results, "gennest_vs_sagan_fd.png"), dpi=110)
    plt.close(fig)

    shown = [s for s in steps if s in (steps[len(steps) // 3 - 1], steps[2 * len(steps) // 3 - 1], steps[-1])]
    fig, axes = plt.subplots(len(shown), len(RUNS), figsize=(3.2 * len(RUNS), 3.3 * len(shown)), squeeze=False)
    spread = {n: {} for n in RUNS}
    for i, step in enumerate(shown):
        for j, (n, w) in enumerate(workdirs.items()):
            images = visualize.generator_samples(w, 36, seed=0, step=step)["images"]
            spread[n][step] = float(images.std(axis=0).mean())
            axes[i, j].imshow(visualize.sample_grid(images, 6), interpolation="nearest")
            axes[i, j].set_title(f"{n}, step {step}, FD {fd[n][step]:.3f}", fontsize=8)
            axes[i, j].axis("off")
    fig.tight_layout()
    fig.savefig(os.path.join(args.results, "gennest_vs_sagan_samples.png"), dpi=110)
    plt.close(fig)
    real = next(iter(data.eval_batches(gan.dataset, global_batch_size=360)))["image"][:36]
    text = text.replace("\n\n![samples]", "\n\nSpread of the 36 samples in the picture below (the per-pixel standard "
                        "deviation across samples, in [0, 1] pixel units, averaged over pixels; near 0: every latent "
                        f"gives the same image), against {float((np.asarray(real) + 1.0).std(axis=0).mean() / 2):.3f} "
                        "for the first 36 test digits:\n\n| step | " + " | ".join(RUNS) + " |\n|---|" + "---|" * len(RUNS)
                        + "".join(f"\n| {s} | " + " | ".join(f"{spread[n][s]:.3f}" for n in RUNS) + " |" for s in shown)
                        + "\n\n![samples]")
    with open(os.path.join(args.results, "gennest_vs_sagan.md"), "w", encoding="utf-8") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
