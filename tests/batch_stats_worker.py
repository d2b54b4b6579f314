"""Run by test_batch_norm.py in a fresh process with 8 virtual CPU devices: trains a few steps of the
MaxViT digits config (BatchNorm throughout) on a 1-device mesh and on a mesh of 8 data-parallel devices
(data 4 x fsdp 2) from the same initial state and batches, and prints both runs' batch statistics,
losses and parameters as JSON."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402

from tokenlearner_jax import data  # noqa: E402
from tokenlearner_jax.train import trainer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import maxvit_digits  # noqa: E402


def train(mesh, devices, steps=3):
    config = maxvit_digits.get_config()
    config.model.stem_widths, config.model.depths, config.model.dims = (8, 16), (1, 1), (32, 32)
    config.dataset.image_size = 16
    config.batch_size = 32
    config.mesh.data, config.mesh.fsdp, config.mesh.model = mesh
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, total_steps=steps, devices=devices)
    state = setup.init_state()
    batches = data.train_iterator(config.dataset, global_batch_size=config.batch_size, seed=0)
    losses = []
    with setup.context():
        for _ in range(steps):
            state, metrics, _ = setup.train_step(state, setup.to_global(next(batches)))
            losses.append(float(metrics["train/loss"]))
    flat = jax.tree_util.tree_leaves_with_path(state.model_state["batch_stats"])
    stats = {jax.tree_util.keystr(path): np.asarray(value).tolist() for path, value in flat}
    params = [float(np.abs(np.asarray(x)).sum()) for x in jax.tree.leaves(state.params)]
    return {"batch_stats": stats, "losses": losses, "params": params}


if __name__ == "__main__":
    assert jax.device_count() == 8
    print(json.dumps({"single": train((1, 1, 1), jax.devices()[:1]),
                      "sharded": train((4, 2, 1), jax.devices())}))
