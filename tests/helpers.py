"""Helpers shared by the test files (no test file imports another test file)."""

import os
import subprocess
import sys

from tokenlearner_jax.recipes import sweeps
from tokenlearner_jax.train import checkpoint as checkpoint_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")

# A tiny ViT + TokenLearner on digits (the quickstart config with small overrides), for main.py runs.
TINY = [
    "--config=configs/quickstart.py",
    "--config.model.width=32", "--config.model.depth=2", "--config.model.num_heads=2",
    "--config.model.mlp_dim=64", "--config.model.token_learner.location=1",
    "--config.dataset.image_size=16", "--config.batch_size=32", "--config.eval_batch_size=100",
    "--config.log_every_steps=2", "--config.optimizer.warmup_steps=2", "--config.dataset.shift_pixels=1",
]


def run_python(args, *, env=None, timeout=600, check=True, cwd=ROOT):
    """Runs `python args...` in `cwd` (the repository root); returns the CompletedProcess (text output)."""
    full_env = dict(ENV)
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def main_py(workdir, *extra, **kwargs):
    """main.py with the TINY flags (later flags win) in a subprocess."""
    return run_python(["main.py", f"--workdir={workdir}", *TINY, *extra], **kwargs)


def parse_config(flags):
    """The ConfigDict main.py builds from `flags` (['--config=configs/x.py[:arg]', '--config.field=value',
    ...]), parsed in this process by the same ml_collections config flags."""
    from absl import flags as absl_flags
    from ml_collections import config_flags

    flag_values = absl_flags.FlagValues()
    argv = ["main.py", *[flag if not flag.startswith("--config=") or os.path.isabs(flag[9:])
                         else "--config=" + os.path.join(ROOT, flag[9:]) for flag in flags]]
    config_flags.DEFINE_config_file("config", None, flag_values=flag_values, lock_config=True, sys_argv=argv)
    flag_values(argv)
    return flag_values.config


def train(workdir, *flags):
    """trainer.run on the TINY flags (later flags win), in this process; returns (state, final metrics)."""
    from tokenlearner_jax.train import trainer

    return trainer.run(parse_config([*TINY, *flags]), str(workdir))


def load_config(name: str, arg=None):
    """`configs/<name>`'s get_config(arg), as main.py would load it (without command-line overrides)."""
    return sweeps.load_module(os.path.join(ROOT, "configs", name)).get_config(arg)


def tiny_config(**overrides):
    """The TINY run as a ConfigDict (the quickstart config with the TINY overrides), for in-process runs;
    `overrides` are dotted field names ("optimizer.learning_rate") and values."""
    config = load_config("quickstart.py")
    for flag in TINY[1:]:
        key, value = flag[len("--config."):].split("=", 1)
        overrides.setdefault(key, type(_get(config, key))(value))
    for key, value in overrides.items():
        *parents, name = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[name] = value
    return config


def _get(config, key):
    for part in key.split("."):
        config = config[part]
    return config


def validate(config):
    """Everything main.py checks before building or reading anything (train/trainer.validate)."""
    from tokenlearner_jax.train import trainer

    trainer.validate(config)


def final_params(workdir, key="params"):
    """The parameters (or another train-state field, e.g. 'ema_params') of the newest checkpoint of a
    workdir, as numpy."""
    step, state = checkpoint_lib.read_state(os.path.join(workdir, "checkpoints"))
    return step, state[key]
