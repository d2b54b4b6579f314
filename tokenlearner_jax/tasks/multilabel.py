"""Multi-label classification (Charades-style actions, JFT-style tags): several positive classes per
example, a sigmoid cross-entropy loss, and mean average precision over the whole eval split.

Training is `Classification`'s step with multi-hot labels (Mixup / CutMix and label smoothing apply
to the multi-hot targets). Evaluation keeps every example's class scores, sigmoid probabilities
aggregated over the example's views (video clips x crops, `[batch, views, ...]`) by their mean or max
(`config.multilabel.view_aggregation`), and computes per-class AP and its mean over the classes that
have a positive in the split (evaluate/multilabel.py, equal to scikit-learn's macro
`average_precision_score`). The eval step's outputs are replicated over processes, so every process
holds every example of the split once and all compute the same mAP. Metrics: 'mAP', 'loss' (the mean
over views of the per-view sigmoid cross-entropy summed over classes), 'num_examples' and
'classes_without_positives'; the per-class AP table is written to the workdir as
`<prefix>_per_class_ap.csv` ('eval', 'eval_ema').
"""

import io

import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.evaluate import multilabel as multilabel_metrics
from tokenlearner_jax.tasks import classification, losses
from tokenlearner_jax.tasks.base import EvalAccumulator, register

AGGREGATIONS = ("mean", "max")


def default_config() -> dict:
    """The fields of `config` this task reads: `Classification`'s with the sigmoid loss, and the
    `multilabel` section."""
    return dict(classification.default_config(), loss="sigmoid_xent",
                multilabel=dict(view_aggregation="mean"))


def aggregate_views(scores, how: str):
    """`[batch, views, classes]` -> `[batch, classes]` by the mean or the max over the views."""
    if how == "mean":
        return scores.mean(axis=1)
    if how == "max":
        return scores.max(axis=1)
    raise ValueError(f"config.multilabel.view_aggregation={how!r}: expected one of {AGGREGATIONS}")


class ScoreAccumulator(EvalAccumulator):
    """Keeps the scores and labels of every real example; mAP at the end."""

    def __init__(self):
        self.scores, self.labels, self.loss_sum = [], [], 0.0
        self.per_class = None

    def add(self, outputs):
        keep = np.asarray(outputs["mask"]) > 0
        self.scores.append(np.asarray(outputs["scores"])[keep])
        self.labels.append(np.asarray(outputs["labels"])[keep])
        self.loss_sum += float(outputs["loss_sum"])

    def result(self) -> dict:
        if not self.scores:
            raise ValueError("the eval split is empty")
        scores, labels = np.concatenate(self.scores), np.concatenate(self.labels)
        mean, self.per_class, excluded = multilabel_metrics.mean_average_precision(scores, labels)
        self.positives = labels.sum(axis=0)
        return {"mAP": mean, "loss": self.loss_sum / max(len(scores), 1), "num_examples": float(len(scores)),
                "classes_without_positives": float(excluded)}

    def files(self) -> dict:
        out = io.StringIO()
        out.write("class,average_precision,positives\n")
        for c, (ap, positives) in enumerate(zip(self.per_class, self.positives)):
            out.write(f"{c},{'' if np.isnan(ap) else f'{ap:.6f}'},{int(positives)}\n")
        return {"per_class_ap.csv": out.getvalue()}


@register("multilabel")
class MultiLabel(classification.Classification):
    """`config.model` trained with a sigmoid loss on multi-hot labels; mAP evaluation."""

    default_config = staticmethod(default_config)

    @classmethod
    def validate(cls, config) -> None:
        super().validate(config)
        classification.check(config.loss == "sigmoid_xent", "loss", config.loss,
                             "'sigmoid_xent' (independent classes) for the multilabel task")
        how = config.multilabel.view_aggregation
        classification.check(how in AGGREGATIONS, "multilabel.view_aggregation", how, f"one of {AGGREGATIONS}")

    def train_metrics(self, logits, labels) -> dict:
        return {}

    def eval_step(self, state, batch: dict):
        images, labels = batch["image"], batch["label"].astype(jnp.float32)
        if images.ndim == len(self.input_shape) + 1:  # one view: [batch, ...] -> [batch, 1, ...]
            images = images[:, None]
        batch_size, views = images.shape[:2]
        logits = self.model.apply(self.variables(state), images.reshape((-1,) + images.shape[2:]), train=False)
        logits = logits.astype(jnp.float32).reshape(batch_size, views, -1)
        per_view_loss = losses.per_example_loss("sigmoid_xent", logits, jnp.repeat(labels[:, None], views, axis=1))
        scores = aggregate_views(jax.nn.sigmoid(logits), self.config.multilabel.view_aggregation)
        return {"scores": scores, "labels": labels, "mask": batch["mask"],
                "loss_sum": jnp.sum(per_view_loss.mean(axis=1) * batch["mask"])}

    def eval_accumulator(self) -> EvalAccumulator:
        return ScoreAccumulator()
