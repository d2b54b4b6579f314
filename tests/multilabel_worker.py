"""Run by test_multilabel.py: one process of a (possibly two-process) CPU run of the multilabel task.

Usage: multilabel_worker.py WORKDIR OUT_JSON [COORDINATOR NUM_PROCESSES PROCESS_ID]
Trains a tiny ViT for 3 steps through trainer.run on random multi-label data, then evaluates the final
state once more by hand (the trainer's jitted eval step, outputs replicated over processes) and writes
the trainer's eval metrics with scikit-learn's macro average precision of the gathered scores."""

import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 2)

from tokenlearner_jax.train import distributed  # noqa: E402

if len(sys.argv) > 3:
    distributed.initialize(sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))

import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score  # noqa: E402

from tokenlearner_jax import data, models, recipes  # noqa: E402
from tokenlearner_jax.train import trainer  # noqa: E402

config = recipes.base("multilabel")
config.dataset = recipes.dataset(name="synthetic_multilabel", num_classes=12, image_size=16, augment="none",
                                 synthetic_train_size=64, synthetic_eval_size=50)
config.model = models.config("vit", variant="S/4", num_classes=12, width=16, depth=1, num_heads=2, mlp_dim=32,
                             classifier="gap", head_bias_init=0.5)
config.batch_size, config.eval_batch_size = 16, 20  # 50 examples: the last batch is padded
config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps = 3, 3, 3
config.optimizer.learning_rate = 0.1
state, metrics = trainer.run(config, sys.argv[1])

setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=3)
scores, labels = [], []
with setup.context():
    for batch in data.eval_batches(config.dataset, global_batch_size=config.eval_batch_size,
                                   process_index=jax.process_index(), process_count=jax.process_count()):
        out = jax.device_get(setup.eval_step(state, setup.to_global(batch)))
        keep = np.asarray(out["mask"]) > 0
        scores.append(np.asarray(out["scores"])[keep])
        labels.append(np.asarray(out["labels"])[keep])
scores, labels = np.concatenate(scores), np.concatenate(labels)
with_positives = labels.sum(axis=0) > 0
sklearn_map = average_precision_score(labels[:, with_positives], scores[:, with_positives], average="macro")
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump({"metrics": metrics, "sklearn_map": float(sklearn_map), "num_scored": int(len(scores)),
               "without_positives": int((~with_positives).sum()), "processes": jax.process_count()}, f)
