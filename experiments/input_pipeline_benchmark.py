"""Does the input pipeline keep up with the train step? JPEG decoding plus augmentation throughput.

  python experiments/input_pipeline_benchmark.py [--images=256 --batches=8]

Writes generated JPEGs (ImageNet-like 500x375, smooth colour fields with texture, quality 90) into an
image-folder layout, then times the trainer's own input pipeline (data.train_iterator: grain, with
`num_workers` preprocessing threads) on batches of 16 for each recipe below, and the bundled digits.
Per-core throughput is images per CPU-second of the process (all threads), the rate one core
sustains; the cores needed to feed a train step are its images/s (experiments/results/benchmark_cpu.json,
when present) over that. Writes experiments/results/input_pipeline.md.
"""

import argparse
import json
import os
import tempfile
import time

import numpy as np
from PIL import Image

from tokenlearner_jax import data

import benchmark  # experiments/benchmark.py: the config files and the model labels

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def write_jpegs(root: str, count: int, classes: int = 4, size=(500, 375), seed: int = 0) -> None:
    """`count` JPEGs under root/train/class_k/."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        low = rng.uniform(0, 255, (6, 8, 3)).astype(np.uint8)
        image = np.asarray(Image.fromarray(low).resize(size, Image.BICUBIC), np.float32)
        image += rng.normal(0, 12, image.shape)  # texture, so the JPEG is not trivially compressible
        folder = os.path.join(root, "train", f"class_{i % classes}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(os.path.join(folder, f"{i:05d}.jpg"),
                                                                      quality=90)


def recipes(root: str) -> dict:
    """name -> config.dataset: the ImageNet recipes of configs/ on the JPEG folder, and the digits."""
    out = {}
    for name, file in (("inception crop + flip (ViT-B/16 recipe)", "vit_b16.py"),
                       ("+ RandAugment 2 x m9, random erasing 0.25 (NesT recipe)", "nest_tiny.py"),
                       ("+ RandAugment 2 x m15 (MaxViT recipe)", "maxvit_tiny.py")):
        dataset = benchmark.load_config_file(file).dataset
        dataset.name, dataset.data_dir, dataset.train_split, dataset.num_classes = "image_folder", root, "train", -1
        out[name] = dataset
    out["digits 32px, shift (quickstart)"] = benchmark.load_config_file("quickstart.py").dataset
    return out


def throughput(dataset, workers: int, batch_size: int, batches: int) -> dict:
    dataset = dataset.copy_and_resolve_references()
    dataset.num_workers = workers
    iterator = data.train_iterator(dataset, global_batch_size=batch_size, seed=0)
    next(iterator)  # threads started, first files read
    start, start_cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        batch = next(iterator)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    assert batch["image"].shape[0] == batch_size
    images = batches * batch_size
    return {"images_per_s": images / wall, "images_per_cpu_s": images / cpu, "shape": list(batch["image"].shape)}


def train_rates() -> dict:
    """{model label: our train images/s} from the last benchmark run, if any."""
    path = os.path.join(RESULTS, "benchmark_cpu.json")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        run = json.load(f)
    return {benchmark.MODELS[m["model"]][0]: run["batch_size"] / float(np.median(m["ours"]["train_times"]["wall"]))
            for m in run["models"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--workers", default="0,2")
    args = parser.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as root:
        write_jpegs(root, args.images)
        sizes = [os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files]
        for name, dataset in recipes(root).items():
            for workers in map(int, args.workers.split(",")):
                result = throughput(dataset, workers, args.batch_size, args.batches)
                rows.append((name, workers, result))
                print(name, workers, result, flush=True)
    rates = train_rates()
    lines = ["# Input pipeline throughput\n",
             f"Command: `python experiments/input_pipeline_benchmark.py --images={args.images} --batches={args.batches} "
             f"--batch_size={args.batch_size} --workers={args.workers}`\n",
             f"Machine: {os.cpu_count()} cores; load (1 min) {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after. "
             f"{args.images} generated JPEGs of 500x375 (mean {np.mean(sizes) / 1e3:.0f} kB), batches of "
             f"{args.batch_size} after one warm-up batch, {args.batches} timed batches.\n",
             "| recipe | workers | images/s | images per CPU-second (one core) | output |", "|---|---|---|---|---|"]
    per_core = {}
    for name, workers, result in rows:
        lines.append(f"| {name} | {workers} | {result['images_per_s']:.0f} | {result['images_per_cpu_s']:.0f} | "
                     f"{result['shape']} |")
        per_core[name] = max(per_core.get(name, 0), result["images_per_cpu_s"])
    if rates:
        heaviest = min((v, k) for k, v in per_core.items() if "digits" not in k)
        lines += ["", f"Cores the heaviest 224px recipe ({heaviest[1]}, {heaviest[0]:.0f} images per core-second) "
                      "needs to feed our train step at the rate of experiments/results/benchmark_cpu.md:", "",
                  "| model | train images/s | cores for the input pipeline |", "|---|---|---|"]
        lines += [f"| {model} | {rate:.1f} | {rate / heaviest[0]:.2f} |" for model, rate in rates.items()]
    with open(os.path.join(RESULTS, "input_pipeline.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
