"""timm's logits on our exported files against ours: every backbone timm has, small random models and
full-size variants, and the committed timm fixtures. Not part of the tests (it needs PyTorch and timm).

  python experiments/export_timm_check.py [--timm_python=/work/timm-venv/bin/python]

Run with our environment: it builds each model, draws its parameters (and MaxViT's BatchNorm statistics)
at random, computes our logits on random inputs, exports with tokenlearner_jax.export (timm safetensors,
and the vit_jax .npz for ViT) and then runs itself under `--timm_python` (a venv with torch, timm and
safetensors, e.g. `pip install torch timm safetensors` in a separate venv), which executes the loading code that export
prints for each file (`timm.create_model(..., pretrained_cfg_overlay=dict(file=...))` or timm's model
class + load_state_dict) and computes timm's logits on the same inputs in eval mode. The table and the
command go to experiments/results/export_timm_check.md; a difference above 1e-4 fails the script.

Random values: the model's own initialisation plus N(0, 0.02^2) on every kernel, position embedding and
table and N(0, 0.1^2) on every scale, or N(0, 0.2^2) on what starts at zero (heads, biases, class tokens),
so that every parameter matters; BatchNorm running means N(0, 0.2^2) and variances U(0.5, 1.5). Inputs
N(0, 1), 2 per model, in the normalised space.
"""

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT = os.path.join(ROOT, "experiments", "results", "export_timm_check.md")
TOLERANCE = 1e-4


# ---------------------------------------------------------------------------------------------- our side

def cases():
    """(name, full config, source) with source 'random' or the name of a timm fixture under tests/fixtures/
    (<source>.safetensors, or <source>_token.safetensors for ViT, with inputs in <source>_io.npz)."""
    from tokenlearner_jax import models, recipes

    def config(model, image_size):
        c = recipes.base()
        c.dataset.image_size = image_size
        c.model = model
        return c

    def vit(classifier, **overrides):
        model = models.config("vit", variant="S/4", num_classes=5, classifier=classifier)
        model.update(width=32, depth=2, num_heads=2, mlp_dim=64, **overrides)
        return model

    poolformer = models.config("poolformer", variant="S12", num_classes=5)
    poolformer.update(depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), head_norm="pooled_layer_norm")
    nest_same = models.config("nest", variant="T", num_classes=5)
    nest_same.update(dims=(8, 16, 24), num_heads=(2, 2, 4), depths=(1, 1, 2), patch_size=2)
    nest_symmetric = copy.deepcopy(nest_same)
    nest_symmetric.pool_padding = "symmetric"
    maxvit = models.config("maxvit", variant="T", num_classes=5)
    maxvit.update(stem_widths=(8, 8), depths=(1, 2, 1, 1), dims=(8, 16, 24, 32), head_dim=8)
    full_poolformer = models.config("poolformer", variant="S12")
    full_poolformer.head_norm = "pooled_layer_norm"
    yield "ViT tiny, class token", config(vit("token"), 16), "random"
    yield "ViT tiny, GAP", config(vit("gap"), 32), "random"
    yield "PoolFormer tiny", config(poolformer, 64), "random"
    yield "NesT tiny, 'same' pooling", config(nest_same, 32), "random"
    yield "NesT tiny, 'symmetric' pooling", config(nest_symmetric, 32), "random"
    yield "MaxViT tiny", config(maxvit, 64), "random"
    yield "ViT-B/16", config(models.config("vit", variant="B/16", classifier="token"), 224), "random"
    yield "PoolFormer-S12", config(full_poolformer, 224), "random"
    yield "NesT-T", config(models.config("nest", variant="T"), 224), "random"
    yield "MaxViT-T", config(models.config("maxvit", variant="T"), 224), "random"
    # The fixtures run on their own inputs (*_io.npz; MaxViT's 96x192 with window and grid 3, as made).
    maxvit_fixture = copy.deepcopy(maxvit)
    maxvit_fixture.update(window_size=3, grid_size=3)
    yield "fixture ViT tiny", config(vit("token"), 16), "vit_tiny"
    yield "fixture PoolFormer tiny", config(poolformer, 64), "poolformer_tiny"
    yield "fixture NesT tiny", config(nest_same, 32), "nest_tiny"
    yield "fixture MaxViT tiny", config(maxvit_fixture, 96), "maxvit_tiny"


def random_variables(config, seed):
    import flax
    import jax
    import jax.numpy as jnp

    from tokenlearner_jax import models

    size = config.dataset.image_size
    variables = models.build(config.model).init(jax.random.key(seed), jnp.zeros((1, size, size, 3)), train=False)
    variables = flax.core.meta.unbox({c: t for c, t in variables.items() if c != "intermediates"})
    rng = np.random.default_rng(seed)

    def perturb(path, leaf):
        leaf, name = np.asarray(leaf), path[-1].key
        if name == "mean":
            return (0.2 * rng.standard_normal(leaf.shape)).astype(np.float32)
        if name == "var":
            return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
        scale = 0.2 if not leaf.any() else 0.02 if leaf.ndim >= 2 else 0.1  # zero-initialised heads, biases: 0.2
        return (leaf + scale * rng.standard_normal(leaf.shape)).astype(np.float32)

    return {c: jax.tree_util.tree_map_with_path(perturb, t) for c, t in variables.items()}


def our_side(work: str, only: str = "") -> list:
    """Exports every case (whose name contains `only`) into `work`; returns the manifest for the timm side."""
    import jax
    import safetensors.numpy

    from tokenlearner_jax import export, models, weights

    manifest = []
    for index, (name, config, source) in enumerate(cases()):
        if only not in name:
            continue
        size = config.dataset.image_size
        if source == "random":
            variables = random_variables(config, seed=index)
            images = np.random.default_rng(100 + index).standard_normal((2, size, size, 3)).astype(np.float32)
        else:
            fixtures = os.path.join(ROOT, "tests", "fixtures")
            file = f"{source}_token.safetensors" if config.model.name == "vit" else f"{source}.safetensors"
            tensors = safetensors.numpy.load_file(os.path.join(fixtures, file))
            variables = weights.converter(config.model.name, "safetensors")(tensors, config.model)
            images = np.load(os.path.join(fixtures, f"{source}_io.npz"))["images"].astype(np.float32)
        model = models.build(config.model)
        logits = np.asarray(jax.jit(lambda v, x: model.apply(v, x, train=False))(variables, images))
        np.save(os.path.join(work, f"{index}_images.npy"), images)
        formats = ("timm", "vit_jax") if config.model.name == "vit" and source == "random" else ("timm",)
        for fmt in formats:
            path = os.path.join(work, f"{index}.{'npz' if fmt == 'vit_jax' else 'safetensors'}")
            tensors, metadata = export.export_variables(variables, config, fmt, path=path)
            export.write(path, tensors, metadata, fmt)
            manifest.append(dict(name=name, format=fmt, source=source, index=index, tensors=len(tensors),
                                 code=export.timm_code(config.model, config.dataset, path, fmt),
                                 logits=logits.tolist()))
        print(f"{name}: exported {formats}", flush=True)
    return manifest


# ---------------------------------------------------------------------------------------------- timm's side

def timm_side(work: str) -> None:
    """Runs under the timm venv: executes each entry's loading code, writes timm's logits."""
    import timm
    import torch

    with open(os.path.join(work, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    results = []
    for entry in manifest:
        namespace = {}
        exec(entry["code"], namespace)  # pylint: disable=exec-used  (the code export printed for the file)
        images = np.load(os.path.join(work, f"{entry['index']}_images.npy"))
        with torch.no_grad():
            logits = namespace["model"](torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
        results.append(dict(logits=logits.tolist(), parameters=sum(p.numel() for p in namespace["model"].parameters())))
    with open(os.path.join(work, "timm_results.json"), "w", encoding="utf-8") as f:
        json.dump(dict(results=results, timm=timm.__version__, torch=torch.__version__), f)


# ---------------------------------------------------------------------------------------------- report

def builder(code: str) -> str:
    """The timm call of an entry's loading code, shortened to its builder and model name."""
    line = code.splitlines()[1]
    if "timm.create_model(" in line:
        name = line.split("model_name=", 1)[1].split(",", 1)[0]
        return f"`timm.create_model({name}, ...)`" + (" (npz: custom_load)" if "custom_load" in line else "")
    return f"`{line.split(' = ', 1)[1].split('(', 1)[0]}(...)` + load_state_dict"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timm_python", default="/work/timm-venv/bin/python")
    parser.add_argument("--only", default="", help="Run only the cases whose name contains this (not for the "
                        "committed table).")
    parser.add_argument("--timm_side", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.timm_side:
        timm_side(args.timm_side)
        return
    start = time.time()
    with tempfile.TemporaryDirectory() as work:
        manifest = our_side(work, args.only)
        with open(os.path.join(work, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f)
        subprocess.run([args.timm_python, os.path.abspath(__file__), f"--timm_side={work}"], check=True)
        with open(os.path.join(work, "timm_results.json"), encoding="utf-8") as f:
            timm_results = json.load(f)
    import jax

    rows, worst = [], 0.0
    for entry, result in zip(manifest, timm_results["results"]):
        ours, theirs = np.array(entry["logits"]), np.array(result["logits"])
        difference = float(np.abs(ours - theirs).max())
        worst = max(worst, difference)
        source = "random" if entry["source"] == "random" else f"`tests/fixtures/{entry['source']}*`"
        rows.append(f"| {entry['name']} | {entry['format']} | {source} | {builder(entry['code'])} | {entry['tensors']} "
                    f"| {result['parameters']:,} | {np.abs(ours).max():.3f} | {difference:.1e} |")
    lines = [
        "# timm's logits on exported checkpoints",
        "",
        "Command: `python experiments/export_timm_check.py` (our side: jax "
        f"{jax.__version__}, CPU; timm side: `/work/timm-venv/bin/python`, timm {timm_results['timm']}, torch "
        f"{timm_results['torch']}, CPU), {platform.machine()}, {os.cpu_count()} cores, {time.time() - start:.0f} s in "
        f"all (load average {os.getloadavg()[0]:.1f} at the end: a shared machine).",
        "",
        "Each model's parameters are random (the initialisation plus noise, BatchNorm statistics too) or a committed "
        "timm fixture imported with weights/<model>.py; `tokenlearner_jax.export` writes the file, timm builds the "
        "model with the loading code export prints (the builder column) and runs the same 2 inputs in eval mode.",
        "",
        "| model | format | parameters from | timm builder | tensors | timm parameters | max abs logit | "
        "max abs difference |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        f"Largest difference {worst:.1e} (tolerance {TOLERANCE:g}).",
    ]
    if not args.only:
        with open(RESULT, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    if worst > TOLERANCE:
        sys.exit(f"a difference of {worst:.1e} exceeds {TOLERANCE:g}")


if __name__ == "__main__":
    main()
