"""End-to-end training through main.py and the trainer: losses fall, metrics and checkpoints are
written, a killed run resumes exactly, gradient accumulation and configs behave."""

import json
import os
import signal
import subprocess
import sys
import time

import flax
import jax
import numpy as np
import pytest

from helpers import ROOT, TINY, final_params, main_py, parse_config, run_python
from tokenlearner_jax.train import metrics_log, trainer

def test_quick_run_trains_evaluates_and_writes_its_records(tmp_path):
    workdir = str(tmp_path / "run")
    main_py(workdir, "--config.num_train_steps=100", "--config.eval_every_steps=50",
            "--config.checkpoint_every_steps=50", "--config.optimizer.learning_rate=3e-3")
    records = metrics_log.read_metrics(workdir)
    train = [r["train/loss"] for r in records if "train/loss" in r]
    assert np.mean(train[-3:]) < np.mean(train[:3]) - 0.3, train
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [50, 100]
    assert all(r["eval/num_examples"] == 360 for r in evals)  # the whole test split, no example twice
    assert evals[-1]["eval/accuracy"] > 0.3  # ten classes: chance is 0.1
    assert records[0]["step"] == 0 and records[0]["model/num_params"] > 0 and records[0]["model/gmacs"] > 0
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["model"]["width"] == 32
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["100", "50"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir))

    # --mode=eval evaluates the latest checkpoint and gets the same accuracy.
    log = os.path.join(workdir, "log.txt")
    before = os.path.getsize(log)
    proc = main_py(workdir, "--mode=eval")
    assert f"eval step 100: loss {evals[-1]['eval/loss']:.4g}" in proc.stdout
    with open(log, encoding="utf-8") as f:
        f.seek(before)
        assert f"'eval/accuracy': {evals[-1]['eval/accuracy']}" in f.read()  # full precision in the log file


def test_killed_run_resumes_to_the_same_parameters_and_metrics(tmp_path):
    steps = ["--config.num_train_steps=60", "--config.checkpoint_every_steps=10",
             "--config.eval_every_steps=30", "--config.keep_checkpoints=10", "--config.ema.decay=0.9"]
    straight = str(tmp_path / "straight")
    main_py(straight, *steps)

    killed = str(tmp_path / "killed")
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "main.py", f"--workdir={killed}", *TINY, *steps], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = os.path.join(killed, "checkpoints", "10")
    deadline = time.time() + 300
    while not os.path.exists(first) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(int(d) for d in os.listdir(os.path.join(killed, "checkpoints")) if d.isdigit())
    assert done and done[-1] < 60, f"the run was not interrupted before its end: {done}"

    main_py(killed, *steps)  # resumes from the newest committed checkpoint
    step_a, params_a = final_params(straight)
    step_b, params_b = final_params(killed)
    assert step_a == step_b == 60
    jax.tree.map(np.testing.assert_array_equal, params_a, params_b)
    jax.tree.map(np.testing.assert_array_equal, final_params(straight, "ema_params")[1],
                 final_params(killed, "ema_params")[1])
    strip = lambda records: [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records]
    assert strip(metrics_log.read_metrics(straight)) == strip(metrics_log.read_metrics(killed))


def test_relative_workdir_trains_checkpoints_and_resumes(tmp_path):
    """`make train` passes a relative --workdir (runs/quickstart)."""
    args = [os.path.join(ROOT, "main.py"), "--workdir=runs/rel", f"--config={os.path.join(ROOT, TINY[0].split('=')[1])}",
            *TINY[1:], "--config.num_train_steps=4", "--config.checkpoint_every_steps=2"]
    run_python(args, cwd=str(tmp_path))
    proc = run_python([*args[:-2], "--config.num_train_steps=6", "--config.checkpoint_every_steps=2"], cwd=str(tmp_path))
    assert "resuming from the checkpoint of step 4" in proc.stdout
    assert sorted(os.listdir(tmp_path / "runs" / "rel" / "checkpoints"))[-1] == "6"


def test_vit_b16_tl_half_without_imagenet_explains_how_to_prepare_it(tmp_path):
    proc = run_python(["main.py", "--config=configs/vit_b16_tl_half.py", f"--workdir={tmp_path}",
                       f"--config.dataset.data_dir={tmp_path / 'tfds'}"], check=False)
    assert proc.returncode != 0
    assert "imagenet2012" in proc.stderr and "tfds build imagenet2012" in proc.stderr


def test_vit_b16_tl_half_runs_one_step_on_synthetic_data(tmp_path):
    trainer.run(parse_config(["--config=configs/vit_b16_tl_half.py", "--config.dataset.name=synthetic",
                              "--config.batch_size=2", "--config.eval_batch_size=2", "--config.num_train_steps=1",
                              "--config.dataset.synthetic_eval_size=2", "--config.dataset.num_workers=0"]),
                str(tmp_path))
    records = metrics_log.read_metrics(str(tmp_path))
    assert records[0]["model/num_params"] == pytest.approx(86.6e6, rel=0.01)
    assert [r["step"] for r in records if "eval/accuracy" in r] == [1]


@pytest.mark.parametrize("override, message", [
    ("--config.model.bogus=1", "bogus"),
    ("--config.batch_size=many", "batch_size"),
    ("--config.dataset.image_size=30", "config.dataset.image_size=30"),
    ("--config.model.token_learner.location=7", "config.model.token_learner.location=7"),
    ("--config.model.num_classes=12", "config.model.num_classes=12"),
    ("--config.grad_accum_steps=3", "config.batch_size=32"),
    ("--config.loss=hinge", "config.loss='hinge'"),
    ("--config.optimizer.name=lamb", "config.optimizer.name='lamb'"),
    ("--config.model.token_learner.version=v2", "config.model.token_learner.version='v2'"),
    ("--config.model.dropout_rate=1.5", "config.model.dropout_rate=1.5"),
    ("--config.dataset.augment=bogus", "config.dataset.augment='bogus'"),
    ("--config.mesh.data=3", "config.mesh"),
    ("--config.eval_every_steps=-1", "config.eval_every_steps=-1"),
])
def test_bad_config_values_are_rejected_with_the_field_named(override, message):
    """Everything main.py checks before training: the flags, the fields, the dataset, the mesh."""
    with pytest.raises(Exception) as error:
        config = parse_config([*TINY, override])
        trainer.validate(config)
        trainer.Setup(config, trainer.resolve_dataset(config), total_steps=1)
    assert message in str(error.value)


def test_main_py_reports_a_bad_value_and_fails(tmp_path):
    proc = main_py(str(tmp_path), "--config.model.token_learner.num_tokens=100", check=False)
    assert proc.returncode != 0
    assert "config.model.token_learner.num_tokens=100: expected at most the 16 patches" in proc.stderr


@pytest.mark.parametrize("flags", [
    TINY,
    ["--config=configs/maxvit_digits.py", "--config.model.stem_widths=(8, 16)", "--config.model.depths=(1, 1)",
     "--config.model.dims=(32, 32)", "--config.dataset.image_size=16", "--config.batch_size=32"],
], ids=["vit_token_learner", "maxvit"])
def test_init_compiled_at_the_cheaper_level_gives_the_default_levels_state(flags):
    """Setup compiles the initialisation with trainer.INIT_COMPILER_OPTIONS to save compile time; the state
    must equal, bit for bit, the one compiled with XLA's default options."""
    config = parse_config(flags)
    setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=1)
    init_at_default_level = jax.jit(lambda rng: flax.core.meta.unbox(setup.task.init_state(rng)),
                                    out_shardings=setup.state_shardings)
    with setup.context():
        default = jax.tree.map(np.asarray, init_at_default_level(jax.random.key(config.seed)))
    cheaper = jax.tree.map(np.asarray, setup.init_state())
    assert trainer.INIT_COMPILER_OPTIONS and jax.tree.structure(cheaper) == jax.tree.structure(default)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(cheaper)[0], jax.tree.leaves(default)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
    assert sum(leaf.size for leaf in jax.tree.leaves(cheaper.params)) > 1000


@pytest.mark.parametrize("flags", [
    TINY,
    ["--config=configs/nest_digits.py", "--config.batch_size=32"],
], ids=["vit_token_learner", "nest"])
def test_train_step_under_the_memory_scheduler_gives_the_default_schedulers_numbers(flags):
    """On CPU, Setup compiles the steps with trainer.CPU_STEP_COMPILER_OPTIONS (another order of the
    same operations, for less memory); two train steps must give, bit for bit, the state and metrics
    of the step compiled with XLA's default scheduler."""
    config = parse_config(flags)
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, total_steps=2)
    assert trainer.step_compiler_options() == trainer.CPU_STEP_COMPILER_OPTIONS
    default_step = jax.jit(setup._train_step, in_shardings=(setup.state_shardings, setup.batch_sharding),
                           out_shardings=(setup.state_shardings, setup.replicated, setup.replicated))
    rng = np.random.RandomState(0)
    batches = [{"image": rng.rand(config.batch_size, *info.image_shape).astype(np.float32),
                "label": rng.randint(0, info.num_classes, config.batch_size).astype(np.int32)} for _ in range(2)]
    results = []
    for step in (setup.train_step, default_step):
        state = setup.init_state()
        with setup.context():
            for batch in batches:
                state, *metrics = step(state, setup.to_global(batch))
        results.append(jax.tree.map(np.asarray, (state, metrics)))
    (ours, default) = results
    assert jax.tree.structure(ours) == jax.tree.structure(default)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(ours)[0], jax.tree.leaves(default)):
        np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))
