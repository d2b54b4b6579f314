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


def test_a_side_overrides_config_fields():
    side = benchmark.parse_side("fsdp:xla_flags=--xla_force_host_platform_device_count=2;"
                                "config=mesh.data:1,mesh.fsdp:-1,shard_optimizer_state:False", ROOT)
    assert side["config"] == {"mesh.data": 1, "mesh.fsdp": -1, "shard_optimizer_state": False}
    assert side["xla_flags"] == "--xla_force_host_platform_device_count=2"
    config, _ = benchmark.benchmark_config(benchmark.MODELS["vit_s16"][1], batch_size=4, overrides=side["config"])
    assert (config.mesh.data, config.mesh.fsdp, config.shard_optimizer_state) == (1, -1, False)
    with pytest.raises(ValueError, match="config='mesh.fsdp=2'"):
        benchmark.parse_side("bad:config=mesh.fsdp=2", ROOT)


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


def test_profile_ops_matches_traced_thunks_with_the_compiled_program(tmp_path):
    import jax
    import jax.numpy as jnp
    import profile_ops  # experiments/profile_ops.py

    x, w = jax.block_until_ready((jnp.ones((64, 128)), jnp.ones((128, 32))))
    step = jax.jit(lambda x, w: jnp.tanh(x @ w).sum()).lower(x, w).compile()
    instructions = profile_ops.parse_hlo(step.as_text())
    with jax.profiler.trace(str(tmp_path)):  # only this program runs while tracing
        for _ in range(3):
            step(x, w).block_until_ready()
    events = profile_ops.thunk_events(str(tmp_path))
    assert events and all(name in instructions and 0 <= start <= end for name, start, end in events)
    assert {name for name, _, _ in events} == set(profile_ops.op_times(str(tmp_path)))


def test_idle_cores_counts_busy_samples_within_a_window():
    import idle_cores  # experiments/idle_cores.py

    samples = {0: ((10, 20, 30, 40), (True, False, True, True)), 1: ((15, 25, 35), (False, False, True))}
    assert idle_cores.busy_cores(samples, 20, 35) == (2, 4)  # cpu 0: 20 idle, 30 busy; cpu 1: 25 idle, 35 busy
    assert idle_cores.busy_cores(samples, 0, 100) == (4, 7)
    assert idle_cores.busy_cores(samples, 41, 50) == (0, 0)
