"""Few-shot linear evaluation of a model's frozen pre-logit features on several datasets.

`config.fewshot.datasets` names datasets as keys of `DATASETS` (digits, caltech101, cifar100, dtd,
oxford_iiit_pet, imagenet2012) or as 'tfds_name:train_split:test_split'. Each is read through the
input pipeline of `config.dataset` (its image size, normalisation, data_dir; no augmentation); the
features are the model's pre-logits (sown as intermediates/pre_logits) of every image of both
splits; the k-shot sets are drawn from the training split's features and the accuracy is measured on
the whole test split (evaluate/fewshot.py). A dataset that is not prepared here is logged with the
reason and skipped; the others are still evaluated. Metrics: `fewshot/<key>_<k>shot` (mean over
seeds) and `fewshot/<key>_<k>shot_seed<s>`.
"""

import logging
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from tokenlearner_jax import data
from tokenlearner_jax.evaluate import fewshot

# key -> (dataset name, training split the shots are drawn from, test split)
DATASETS = {
    "digits": ("digits", "train", "test"),
    "caltech101": ("caltech101", "train", "test"),
    "cifar100": ("cifar100", "train", "test"),
    "dtd": ("dtd", "train", "test"),
    "oxford_iiit_pet": ("oxford_iiit_pet", "train", "test"),
    # About 64 images per class: enough for 25 shots without reading all 1.28M training images.
    "imagenet2012": ("imagenet2012", "train[:5%]", "validation"),
}


def parse_dataset(entry: str) -> tuple:
    """'cifar100' or 'name:train_split:test_split' -> (metric key, name, train split, test split)."""
    if entry in DATASETS:
        return (entry, *DATASETS[entry])
    parts = entry.split(":")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"config.fewshot.datasets: {entry!r} is neither one of {sorted(DATASETS)} nor "
                         f"'tfds_name:train_split:test_split'")
    return (parts[0], *parts)


class FewShotEvaluator:
    """Runs `config.fewshot` with a jitted features function on the trainer's mesh.

    Args:
      config: the run config (its `fewshot`, `dataset` and `eval_batch_size`).
      features_step: `(variables, global batch) -> (features [batch, dim], labels [batch], mask [batch])`,
        jitted with replicated outputs (the trainer's `Setup.fewshot_evaluator` makes it from the task).
      to_global: process-local batch -> global arrays.
      context: a context manager factory under which the step runs (mesh and sharding rules).

    `skipped` maps the key of every dataset found unavailable to the reason; it is not tried again."""

    def __init__(self, config, features_step: Callable, to_global: Callable, context: Callable):
        fs = config.fewshot
        self.config = config
        self.datasets = [parse_dataset(entry) for entry in fs.datasets]
        if not self.datasets:
            raise ValueError("config.fewshot.datasets is empty: name at least one dataset, e.g. ('digits',)")
        if fs.seeds < 1 or not fs.shots or min(fs.shots) < 1:
            raise ValueError(f"config.fewshot: expected seeds >= 1 and shots >= 1, got seeds={fs.seeds}, "
                             f"shots={fs.shots}")
        self.skipped = {}
        self._features = features_step
        self._to_global = to_global
        self._context = context

    def _dataset_config(self, name: str, train_split: str, test_split: str) -> ml_collections.ConfigDict:
        dataset = ml_collections.ConfigDict(self.config.dataset.to_dict())
        dataset.name, dataset.train_split, dataset.eval_split = name, train_split, test_split
        dataset.num_classes = -1
        dataset.augment = "none"
        return dataset

    def features(self, variables: dict, dataset_config, split: str):
        """(features float32 `[n, dim]`, labels int `[n]`) of every image of `split`, on every process."""
        batches = data.eval_batches(dataset_config, global_batch_size=self.config.eval_batch_size,
                                    process_index=jax.process_index(), process_count=jax.process_count(),
                                    split=split)
        features, labels = [], []
        for batch in batches:
            out = self._features(variables, self._to_global(batch))
            batch_features, batch_labels, mask = (np.asarray(x.addressable_data(0)) for x in out)
            keep = mask > 0
            features.append(batch_features[keep])
            labels.append(batch_labels[keep])
        return np.concatenate(features).astype(np.float32), np.concatenate(labels)

    def run(self, variables: dict) -> dict:
        """{'fewshot/<key>_<k>shot': mean accuracy, 'fewshot/<key>_<k>shot_seed<s>': accuracy} for the
        model `variables` ({'params': ..., other collections})."""
        fs = self.config.fewshot
        metrics = {}
        with self._context():
            for key, name, train_split, test_split in self.datasets:
                if key in self.skipped:  # reported at the first evaluation
                    continue
                dataset_config = self._dataset_config(name, train_split, test_split)
                try:
                    info = data.get_info(dataset_config)
                except data.DatasetNotFoundError as e:
                    self.skipped[key] = str(e)
                    logging.warning("few-shot: dataset %r skipped, not available here: %s", key, e)
                    continue
                if info.multi_label:
                    self.skipped[key] = "multi-label"
                    logging.warning("few-shot: dataset %r skipped: multi-label datasets are not supported", key)
                    continue
                start = time.time()
                train_x, train_y = self.features(variables, dataset_config, train_split)
                test_x, test_y = self.features(variables, dataset_config, test_split)
                results = fewshot.evaluate(train_x, train_y, test_x, test_y, info.num_classes, shots=fs.shots,
                                           seeds=fs.seeds, l2_regs=fs.l2_regs)
                for shots, per_seed in results.items():
                    accuracies = [r.accuracy for r in per_seed]
                    metrics[f"fewshot/{key}_{shots}shot"] = float(np.mean(accuracies))
                    for seed, accuracy in enumerate(accuracies):
                        metrics[f"fewshot/{key}_{shots}shot_seed{seed}"] = accuracy
                    logging.info("few-shot %s %d-shot: %.4f mean over seeds %s (l2 chosen %s)", key, shots,
                                 np.mean(accuracies), [round(a, 4) for a in accuracies],
                                 [r.l2 for r in per_seed])
                logging.info("few-shot %s: %d train / %d test images, %d-d features, %.1f s", key, len(train_y),
                             len(test_y), train_x.shape[1], time.time() - start)
        return metrics
