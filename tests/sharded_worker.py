"""Run by test_sharding.py in a fresh process with 8 virtual CPU devices: trains a few steps of a tiny
model on a 1-device mesh, on a data x fsdp x model mesh and on a data-parallel mesh of 8, and prints the
runs' results as JSON."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"

import json  # noqa: E402

import jax  # noqa: E402
import numpy as np  # noqa: E402
from ml_collections import config_flags  # noqa: E402,F401

from tokenlearner_jax import data  # noqa: E402
from tokenlearner_jax.train import trainer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import quickstart  # noqa: E402


def train(mesh, devices, steps=4):
    config = quickstart.get_config()
    config.model.width, config.model.depth, config.model.num_heads, config.model.mlp_dim = 32, 3, 4, 64
    config.dataset.image_size = 16
    config.batch_size = 16
    config.mesh.data, config.mesh.fsdp, config.mesh.model = mesh
    info = trainer.resolve_dataset(config)
    setup = trainer.Setup(config, info, total_steps=steps, devices=devices)
    state = setup.init_state()
    initial = [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)]
    kernel = state.params["encoderblock_0"]["MlpBlock_3"]["Dense_0"]["kernel"]
    # Adam's first moment of the same kernel (config.shard_optimizer_state is on by default)
    moment = next(leaf for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]
                  if "mu" in jax.tree_util.keystr(path) and "encoderblock_0']['MlpBlock_3']['Dense_0']['kernel"
                  in jax.tree_util.keystr(path))
    layout = {name: {"spec": str(x.sharding.spec), "global": list(x.shape),
                     "shard": list(x.addressable_shards[0].data.shape),
                     "num_shards": len({str(s.index) for s in x.addressable_shards})}
              for name, x in (("kernel", kernel), ("moment", moment))}
    batches = data.train_iterator(config.dataset, global_batch_size=config.batch_size, seed=0)
    losses = []
    with setup.context():
        for _ in range(steps):
            state, metrics, _ = setup.train_step(state, setup.to_global(next(batches)))
            losses.append(float(metrics["train/loss"]))
        eval_metrics = setup.evaluate(state)
    params = [float(np.abs(np.asarray(x)).sum()) for x in jax.tree.leaves(state.params)]
    return {"layout": layout, "losses": losses, "params": params, "eval": eval_metrics,
            "initial": initial, "batch_draws": setup.batch_draws}


if __name__ == "__main__":
    assert jax.device_count() == 8
    print(json.dumps({"single": train((1, 1, 1), jax.devices()[:1]),
                      "sharded": train((2, 2, 2), jax.devices()),
                      "data_parallel": train((8, 1, 1), jax.devices())}))
