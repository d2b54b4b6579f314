"""The benchmark scripts of experiments/ still run against the library as it is (they import the trainer
and the config files, which move): the GPU benchmark's small CPU form end to end, and the CPU
benchmark's configs for every family built with the variant it names."""

import json
import os
import sys

import pytest

from helpers import ROOT, run_python

sys.path.insert(0, os.path.join(ROOT, "experiments"))
import benchmark  # noqa: E402  (experiments/benchmark.py)


@pytest.mark.parametrize("model", list(benchmark.MODELS))
def test_every_benchmark_model_builds_from_its_config_file(model):
    from tokenlearner_jax import models

    config, info = benchmark.benchmark_config(benchmark.MODELS[model][1], batch_size=4)
    assert config.batch_size == 4 and info.image_shape[-3:] == (224, 224, 3)
    family, variant = benchmark.MODELS[model][1].split(":")
    assert config.model.variant == variant
    models.validate(config.model, info.image_shape)
    if benchmark.MODELS[model][2]:  # the timm side gets the variant's drop path, not the config's -1
        assert benchmark.timm_spec(model, 4)["drop_path_rate"] >= 0


@pytest.mark.slow
def test_the_gpu_benchmark_runs_small_on_the_cpu(tmp_path):
    output = tmp_path / "gpu"
    run_python(["experiments/gpu_benchmark.py", "--device=cpu", "--small", f"--output={output}",
                f"--log_dir={tmp_path}"], timeout=900)
    with open(f"{output}.json", encoding="utf-8") as f:
        run = json.load(f)
    ours = run["sides"]["ours"]
    assert ours["train_flops"] > 0 and len(ours["train_times"]["wall"]) == run["rounds"] * run["steps"]
    assert all(t > 0 for t in ours["train_times"]["wall"] + ours["infer_times"]["wall"])
    text = (tmp_path / "gpu.md").read_text()
    assert "| ours |" in text and "| ours_flags |" in text
