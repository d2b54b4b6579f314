"""Sweeps: the helpers of recipes/sweeps.py, and `python -m tokenlearner_jax.sweep` running tiny sweeps through
main.py (a failing point, skipping finished points, a stopped sweep resuming, --print-commands)."""

import csv
import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from absl import flags
from ml_collections import config_flags

from helpers import ROOT, run_python
from tokenlearner_jax.recipes import sweeps

# A tiny ViT + TokenLearner on digits (as test_trainer.py's TINY), with a sweep; {points} is filled in.
SWEEP_CONFIG = '''
from tokenlearner_jax.recipes import sweeps

def get_config(arg=None):
    config = sweeps.load_module({quickstart!r}).get_config()
    config.model.width, config.model.depth, config.model.num_heads, config.model.mlp_dim = 32, 2, 2, 64
    config.model.token_learner.location = 1
    config.dataset.image_size, config.dataset.shift_pixels = 16, 1
    config.batch_size, config.eval_batch_size = 32, 120
    config.optimizer.warmup_steps = 2
    config.log_every_steps = 2
    return config

def get_sweep(arg=None):
    return {points}
'''


def write_sweep_config(tmp_path, points) -> str:
    path = tmp_path / "sweep_config.py"
    path.write_text(SWEEP_CONFIG.format(quickstart=os.path.join(ROOT, "configs", "quickstart.py"), points=points))
    return str(path)


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------------- sweeps

def test_product_zip_and_axis_build_points():
    tokens = sweeps.axis("config.model.token_learner.num_tokens", [8, 16])
    seeds = sweeps.axis("seed", [0, 1, 2])
    points = sweeps.product(tokens, seeds)
    assert len(points) == 6
    assert points[0] == {"model.token_learner.num_tokens": 8, "seed": 0}  # 'config.' stripped
    assert points[5] == {"model.token_learner.num_tokens": 16, "seed": 2}  # the first axis varies slowest
    zipped = sweeps.zip(sweeps.axis("optimizer.learning_rate", [1e-3, 3e-3]), sweeps.axis("seed", [4, 5]))
    assert zipped == [{"optimizer.learning_rate": 1e-3, "seed": 4}, {"optimizer.learning_rate": 3e-3, "seed": 5}]
    with pytest.raises(ValueError, match="equal length"):
        sweeps.zip(tokens, seeds)
    with pytest.raises(ValueError, match="disagree on seed"):
        sweeps.product(sweeps.axis("seed", [0]), sweeps.axis("seed", [1]))


def test_point_names_use_short_keys_unless_ambiguous():
    points = [{"model.dropout_rate": 0.1, "model.token_learner.num_tokens": 8},
              {"model.dropout_rate": 0.0, "mixup.prob": 0.5}]
    assert sweeps.point_name(points[0], points) == "dropout_rate=0.1,num_tokens=8"
    clash = [{"model.token_learner.location": 0.5, "seed": 1}, {"model.token_learner.enabled": False, "x.seed": 2}]
    assert sweeps.point_name(clash[0], clash) == "location=0.5,seed=1"
    assert sweeps.point_name(clash[1], clash) == "enabled=False,x.seed=2"
    assert sweeps.point_name({"dataset.data_dir": "/data/x y"}, []) == "data_dir=_data_x_y"
    assert sweeps.point_name({}, [{}]) == "default"


def test_flags_parse_back_through_main_py_config_flags():
    point = {"model.token_learner.num_tokens": 16, "model.token_learner.enabled": False,
             "optimizer.learning_rate": 0.001, "optimizer.weight_decay_exclude": ("/bias$", "a b"),
             "dataset.data_dir": "/x y", "sharding_rules": (("embed", "fsdp"),)}
    argv = ["main.py", "--config=configs/quickstart.py", *sweeps.to_flags(point)]
    flag_values = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    config = flag_values.config
    assert config.model.token_learner.num_tokens == 16 and config.model.token_learner.enabled is False
    assert config.optimizer.learning_rate == 0.001
    assert config.optimizer.weight_decay_exclude == ("/bias$", "a b")
    assert config.dataset.data_dir == "/x y" and config.sharding_rules == (("embed", "fsdp"),)


def test_resolve_rejects_misspelt_fields_and_wrong_types(tmp_path):
    config = write_sweep_config(tmp_path, "[]")
    assert sweeps.resolve(config, {"model.token_learner.num_tokens": 4}).model.token_learner.num_tokens == 4
    with pytest.raises(KeyError, match="num_token"):
        sweeps.resolve(config, {"model.token_learner.num_token": 4})
    with pytest.raises(TypeError):
        sweeps.resolve(config, {"model.token_learner.num_tokens": "eight"})
    with pytest.raises(ValueError, match="returned no points"):
        sweeps.load_sweep(config)
    with pytest.raises(ValueError, match="no get_sweep"):
        sweeps.load_sweep(os.path.join(ROOT, "configs", "quickstart.py"))


def test_print_commands_and_early_rejection_of_a_bad_point(tmp_path):
    config = write_sweep_config(tmp_path, "sweeps.product(sweeps.axis('model.token_learner.num_tokens', "
                                          "[2, 4]), sweeps.axis('seed', [0, 1]))")
    proc = run_python(["-m", "tokenlearner_jax.sweep", f"--config={config}", "--workdir=/sweeps/a b",
                       "--print-commands", "--", "--config.num_train_steps=7"])
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 4
    assert shlex.split(lines[3]) == ["python", "main.py", f"--config={config}",
                                     "--workdir=/sweeps/a b/num_tokens=4,seed=1",
                                     "--config.model.token_learner.num_tokens=4", "--config.seed=1",
                                     "--config.num_train_steps=7"]
    # A point the config rejects (location past the depth) stops the sweep before anything runs.
    bad = write_sweep_config(tmp_path, "sweeps.axis('model.token_learner.location', [1, 5])")
    proc = run_python(["-m", "tokenlearner_jax.sweep", f"--config={bad}", f"--workdir={tmp_path / 'bad'}"],
                      check=False)
    assert proc.returncode != 0 and "location=5" in proc.stderr
    assert not os.path.exists(tmp_path / "bad")


# ------------------------------------------------------------------------------------------- running sweeps

def test_sweep_records_a_failed_point_goes_on_and_skips_finished_points(tmp_path):
    config = write_sweep_config(tmp_path, "[{'model.token_learner.num_tokens': 2}, {'dataset.name': "
                                          "'image_folder', 'dataset.data_dir': '/nonexistent/x'}]")
    root = tmp_path / "root"
    command = ["-m", "tokenlearner_jax.sweep", f"--config={config}", f"--workdir={root}", "--parallel=2", "--",
               "--config.num_train_steps=4"]
    first = run_python(command, check=False)
    assert first.returncode == 1, first.stdout + first.stderr
    good, bad = root / "num_tokens=2", root / "name=image_folder,data_dir=_nonexistent_x"
    rows = {row["point"]: row for row in read_csv(root / "results.csv")}
    assert rows[good.name]["status"] == "done" and rows[good.name]["step"] == "4"
    assert 0.0 <= float(rows[good.name]["eval/accuracy"]) <= 1.0 and float(rows[good.name]["model/gmacs"]) > 0
    assert rows[bad.name]["status"] == "failed" and "/nonexistent/x" in rows[bad.name]["error"]
    markdown = (root / "results.md").read_text()
    assert f"| {good.name} | 2 |" in markdown and f"- {bad.name} failed: exit code 1" in markdown
    manifest = json.loads((root / "sweep.json").read_text())
    assert [p["name"] for p in manifest["points"]] == [good.name, bad.name]

    # Again: the finished point is skipped, the failed one is tried again and fails again.
    second = run_python(command, check=False)
    assert second.returncode == 1
    assert "1 already done, 1 to run" in second.stdout
    assert (good / "console.txt").read_text().count("=== sweep:") == 1
    assert (bad / "console.txt").read_text().count("=== sweep:") == 2
    # main.py's own log.txt holds the libraries' messages, not also the point's console output.
    assert "=== sweep:" not in (good / "log.txt").read_text()
    assert json.loads((bad / "sweep_point.json").read_text())["attempts"] == 2


def test_stopped_sweep_exits_75_and_its_point_resumes_from_its_checkpoint(tmp_path):
    config = write_sweep_config(tmp_path, "[{'seed': 3}]")
    root = tmp_path / "root"
    command = [sys.executable, "-m", "tokenlearner_jax.sweep", f"--config={config}", f"--workdir={root}", "--",
               "--config.num_train_steps=150", "--config.checkpoint_every_steps=5", "--config.keep_checkpoints=50"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    sweep = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    checkpoints = root / "seed=3" / "checkpoints"
    deadline = time.time() + 600  # start-up alone can take minutes on a loaded machine
    while not (checkpoints / "5").exists() and time.time() < deadline and sweep.poll() is None:
        time.sleep(0.05)
    sweep.send_signal(signal.SIGTERM)
    output, _ = sweep.communicate(timeout=120)
    assert sweep.returncode == 75, output
    status = json.loads((root / "seed=3" / "sweep_point.json").read_text())
    assert status["status"] == "interrupted" and status["returncode"] == 75
    stopped_at = max(int(d) for d in os.listdir(checkpoints) if d.isdigit())
    assert 5 <= stopped_at < 150

    resumed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    log = (root / "seed=3" / "log.txt").read_text()  # main.py's own log of the library's messages
    assert f"Resumed from the checkpoint of step {stopped_at}." in log
    row = read_csv(root / "results.csv")[0]
    assert row["status"] == "done" and row["step"] == "150"
