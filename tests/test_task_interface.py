"""A task written here alone -- regressing a digit's value from its pixels with a small MLP -- trains
through the trainer's loop without any change to it: the task interface (tasks/base.py) is complete.
It trains, evaluates, checkpoints, is killed with SIGKILL and resumes to bit-identical parameters and
metrics.

Run as a script (`python tests/test_task_interface.py WORKDIR`), this file trains the toy task in WORKDIR;
the kill test starts it that way, as a process it can kill."""

import os
import signal
import subprocess
import sys
import time

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tokenlearner_jax import recipes  # noqa: E402
from tokenlearner_jax.tasks import base, optimizer  # noqa: E402
from tokenlearner_jax.train import metrics_log, trainer  # noqa: E402

STEPS = 40


class Regressor(nn.Module):
    """Pixels `[batch, height, width, 3]` -> one number per image `[batch]`."""

    @nn.compact
    def __call__(self, images):
        x = nn.relu(nn.Dense(32)(images.reshape(images.shape[0], -1)))
        return nn.Dense(1)(x)[:, 0]


@flax.struct.dataclass
class State:
    step: jax.Array
    params: dict
    opt_state: dict


class SquaredError(base.EvalAccumulator):
    def __init__(self):
        self.sums = np.zeros(2)

    def add(self, outputs):
        self.sums += [float(outputs["squared_error"]), float(outputs["count"])]

    def result(self):
        return {"mse": self.sums[0] / self.sums[1], "num_examples": self.sums[1]}


@base.register("toy_regression")
class ToyRegression(base.Task):
    """Mean squared error between the predicted and the true digit (0..9)."""

    @classmethod
    def default_config(cls):
        return dict(optimizer=optimizer.default_config(learning_rate=3e-3, grad_clip_norm=0.0))

    def __init__(self, config, info, total_steps):
        super().__init__(config, info, total_steps)
        self.model = Regressor()
        self.tx, _ = optimizer.make_optimizer(config.optimizer, total_steps)

    def init_state(self, rng):
        params = self.model.init(rng, jnp.zeros((1,) + tuple(self.info.image_shape)))["params"]
        return State(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params))

    def train_step(self, state, batch, rng):
        def loss_fn(params):
            return jnp.mean((self.model.apply({"params": params}, batch["image"]) - batch["label"]) ** 2)

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        return State(step=state.step + 1, params=params, opt_state=opt_state), {"train/loss": loss}

    def eval_step(self, state, batch):
        error = (self.model.apply({"params": state.params}, batch["image"]) - batch["label"]) ** 2
        return {"squared_error": jnp.sum(error * batch["mask"]), "count": jnp.sum(batch["mask"])}

    def eval_accumulator(self):
        return SquaredError()


def toy_config():
    config = recipes.base("toy_regression")
    config.dataset = recipes.dataset(name="digits", image_size=8, augment="none")
    config.batch_size, config.eval_batch_size = 32, 120
    config.num_train_steps, config.log_every_steps = STEPS, 5
    config.checkpoint_every_steps, config.eval_every_steps = 10, 20
    config.async_checkpointing = False
    return config


def test_a_task_defined_in_a_test_file_trains_through_the_loop(tmp_path):
    state, metrics = trainer.run(toy_config(), str(tmp_path))
    assert int(state.step) == STEPS and metrics["eval/num_examples"] == 360
    records = metrics_log.read_metrics(str(tmp_path))
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    mse = [r["eval/mse"] for r in records if "eval/mse" in r]
    assert [r["step"] for r in records if "eval/mse" in r] == [20, 40]
    assert losses[-1] < 0.5 * losses[0] and mse[-1] < 8.25  # 8.25: the variance of a uniform digit
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["20", "30", "40"]


def test_the_toy_task_resumes_bit_identically_after_kill_9(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="3")
    script = [sys.executable, os.path.abspath(__file__)]
    straight, killed = str(tmp_path / "straight"), str(tmp_path / "killed")
    subprocess.run([*script, straight], env=env, check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*script, killed], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not os.path.exists(os.path.join(killed, "checkpoints", "20")) and time.time() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = sorted(int(d) for d in os.listdir(os.path.join(killed, "checkpoints")) if d.isdigit())
    assert steps and steps[-1] < STEPS, f"the run was not interrupted: {steps}"
    subprocess.run([*script, killed], env=env, check=True, capture_output=True, timeout=600)

    def final(workdir):
        from tokenlearner_jax.train import checkpoint

        return checkpoint.read_state(os.path.join(workdir, "checkpoints"), STEPS)[1]

    jax.tree.map(np.testing.assert_array_equal, final(straight), final(killed))
    strip = lambda records: [{k: v for k, v in r.items() if not k.endswith("_per_sec")} for r in records]
    assert strip(metrics_log.read_metrics(straight)) == strip(metrics_log.read_metrics(killed))


if __name__ == "__main__":
    trainer.run(toy_config(), sys.argv[1])
