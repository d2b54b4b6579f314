"""Every file under configs/ is a whole recipe that resolves and validates; variant-dependent values follow
the variant when it is overridden; a workdir written by the code before the task-based trainer resumes."""

import glob
import json
import os
import shutil

import jax
import numpy as np
import pytest
from flax import traverse_util

from helpers import ROOT, load_config, tiny_config, validate
from tokenlearner_jax import models
from tokenlearner_jax.train import metrics_log, trainer

CONFIGS = sorted(os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "configs", "*.py")))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


@pytest.mark.parametrize("name", CONFIGS)
def test_every_config_resolves_and_validates(name):
    config = load_config(name)
    validate(config)
    networks = [config.gan.generator, config.gan.discriminator] if config.task == "gan" else [config.model]
    assert all(network.name in models.names() for network in networks)
    optimizers = [config.gan.generator_optimizer, config.gan.discriminator_optimizer] if config.task == "gan" else [
        config.optimizer]
    assert all(optimizer.learning_rate > 0 for optimizer in optimizers)
    assert config.num_train_steps > 0 or config.num_epochs > 0 and (config.num_train_steps > 0 or config.num_epochs > 0)


@pytest.mark.parametrize("variant, drop_path, layer_scale", [("S12", 0.1, 1e-5), ("M48", 0.4, 1e-6)])
def test_a_variant_override_brings_the_variants_drop_path_and_layer_scale(variant, drop_path, layer_scale):
    """--config.model.variant=M48 on configs/poolformer_s12.py is M48 with M48's drop path and layer scale."""
    config = load_config("poolformer_s12.py")
    config.model.variant = variant
    model = models.build(config.model)
    assert (model.drop_path_rate, model.layer_scale_init, model.depths) == (
        drop_path, layer_scale, {"S12": (2, 2, 6, 2), "M48": (8, 8, 24, 8)}[variant])
    config.model.drop_path_rate = 0.25  # an explicit value still wins over the variant's
    assert models.build(config.model).drop_path_rate == 0.25


def test_the_same_holds_for_nest_and_maxvit():
    nest = load_config("nest_tiny.py")
    nest.model.variant = "B"
    assert models.build(nest.model).drop_path_rate == 0.5
    maxvit = load_config("maxvit_tiny.py")
    maxvit.model.variant = "L"
    assert models.build(maxvit.model).drop_path_rate == 0.6


def test_a_renamed_field_names_its_new_name():
    config = load_config("poolformer_s12.py")
    with pytest.raises(AttributeError, match="stage"):  # model sections are locked: no silent new field
        config.model.token_learner.stage = 2
    from helpers import run_python

    proc = run_python(["main.py", "--config=configs/poolformer_s12.py", "--workdir=/tmp/unused",
                       "--config.model.token_learner.stage=2"], check=False)
    assert proc.returncode != 0
    assert "--config.model.token_learner.stage was renamed: use --config.model.token_learner.location" in proc.stderr


def test_an_override_of_a_missing_field_is_one_line_naming_it(tmp_path):
    from helpers import run_python

    workdir = tmp_path / "run"
    for override, expected in [
            ("--config.optimizer.learning_rat=1", "--config.optimizer.learning_rat: configs/quickstart.py has no "
             "field 'learning_rat'; did you mean --config.optimizer.learning_rate?"),
            ("--config.nothing.at.all=1", "--config.nothing: configs/quickstart.py has no field 'nothing'")]:
        proc = run_python(["main.py", "--config=configs/quickstart.py", f"--workdir={workdir}", override], check=False)
        assert proc.returncode == 1
        assert proc.stderr.strip().splitlines() == [f"tokenlearner_jax: error: {expected}"], proc.stderr
    assert not workdir.exists()


def test_a_checkpoint_written_before_the_task_based_trainer_resumes(tmp_path):
    """tests/fixtures/pre_refactor_workdir: a tiny run of the code before this trainer (commit 56c1ae1's
    parent), killed after its step-4 checkpoint; its uninterrupted run's step-8 parameters, EMA and
    metrics are committed beside it."""
    workdir = str(tmp_path / "run")
    shutil.copytree(os.path.join(FIXTURES, "pre_refactor_workdir"), workdir)
    config = tiny_config(**{"num_train_steps": 8, "checkpoint_every_steps": 4, "eval_every_steps": 4,
                            "ema.decay": 0.9, "eval_batch_size": 120})
    with open(os.path.join(workdir, "config.json"), encoding="utf-8") as f:
        saved = json.load(f)
    assert saved["model"]["width"] == config.model.width and "task" not in saved  # the old layout
    state, _ = trainer.run(config, workdir)
    expected = np.load(os.path.join(FIXTURES, "pre_refactor_step8.npz"))
    for key in ("params", "ema_params"):
        flat = traverse_util.flatten_dict(jax.tree.map(np.asarray, getattr(state, key)), sep="/")
        assert sorted(flat) == sorted(k[len(key) + 1:] for k in expected.files if k.startswith(key + "/"))
        for name, value in flat.items():
            # A bias added before a softmax over the same axis (attention keys, TokenLearner's position
            # logits) has an analytically zero gradient: its values are float round-off (~1e-6), which
            # moves with the order of operations (stacked QKV, the erf GELU since the fixture was made).
            noise_only = name.endswith("key/bias") or name.endswith("token_masking/Dense_1/bias")
            np.testing.assert_allclose(value, expected[f"{key}/{name}"], rtol=1e-5,
                                       atol=1e-5 if noise_only else 1e-6, err_msg=name)
    strip = lambda records: [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records]
    with open(os.path.join(FIXTURES, "pre_refactor_expected_metrics.jsonl"), encoding="utf-8") as f:
        reference = strip([json.loads(line) for line in f])
    resumed = strip(metrics_log.read_metrics(workdir))
    assert [r["step"] for r in resumed] == [r["step"] for r in reference]
    for ours, theirs in zip(resumed, reference):
        assert ours.keys() == theirs.keys()
        np.testing.assert_allclose([ours[k] for k in ours], [theirs[k] for k in ours], rtol=1e-5)
