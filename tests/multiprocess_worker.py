"""Run by test_multiprocess.py: one process of a (possibly multi-process) CPU run of a tiny config.

Usage: multiprocess_worker.py WORKDIR OUT_NPZ DEVICES [COORDINATOR NUM_PROCESSES PROCESS_ID]
Trains through trainer.run, then saves this process's copy of the (replicated) parameters."""

import os
import sys

import jax

workdir, out_path, num_devices = sys.argv[1], sys.argv[2], int(sys.argv[3])
jax.config.update("jax_num_cpu_devices", num_devices)

from tokenlearner_jax.train import distributed  # noqa: E402

if len(sys.argv) > 4:
    distributed.initialize(sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))

import numpy as np  # noqa: E402
from flax import traverse_util  # noqa: E402

from tokenlearner_jax.train import trainer  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "configs"))
import quickstart  # noqa: E402

config = quickstart.get_config()
config.model.width, config.model.depth, config.model.num_heads, config.model.mlp_dim = 16, 2, 2, 32
config.model.token_learner.location = 1
config.dataset.image_size = 16
config.batch_size = 32
config.eval_batch_size = 64
config.num_train_steps = 6
config.log_every_steps = 3
config.checkpoint_every_steps = 3
state, metrics = trainer.run(config, workdir)
assert jax.process_count() == (int(sys.argv[5]) if len(sys.argv) > 4 else 1)

flat = traverse_util.flatten_dict(jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), state.params),
                                  sep="/")
np.savez(out_path, eval_accuracy=metrics["eval/accuracy"], **flat)
