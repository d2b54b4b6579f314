"""Top-1 / top-5 accuracy and loss over a whole eval split, padded batches masked out."""

import jax
import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.tasks import losses


def eval_metrics(logits, labels, mask, *, loss_name: str):
    """Sums over a batch: logits `[batch, classes]`, labels `[batch]` (or multi-hot `[batch, classes]`),
    mask `[batch]` (1 for real examples). For multi-label data, top-k counts an example as correct
    when any of its k best classes is a positive label."""
    num_classes = logits.shape[-1]
    targets = losses.targets_from_labels(labels, num_classes)
    loss = losses.per_example_loss(loss_name, logits.astype(jnp.float32), targets)
    sums = {"loss": jnp.sum(loss * mask), "count": jnp.sum(mask)}
    for k in (1, 5):
        if k > 1 and num_classes <= 5:
            continue
        top = jax.lax.top_k(logits, k)[1]  # [batch, k]
        hit = jnp.take_along_axis(targets, top, axis=-1).max(axis=-1) > 0
        sums[f"correct_top{k}"] = jnp.sum(hit * mask)
    return sums


def summarize(totals: dict) -> dict:
    """Per-split metrics from summed counts."""
    count = max(float(totals["count"]), 1.0)
    out = {"eval/loss": float(totals["loss"]) / count, "eval/num_examples": float(totals["count"])}
    out["eval/accuracy"] = float(totals["correct_top1"]) / count
    if "correct_top5" in totals:
        out["eval/top5_accuracy"] = float(totals["correct_top5"]) / count
    return out


def evaluate(eval_step, state, batches, to_global) -> dict:
    """Runs `eval_step(state, batch) -> sums` over every batch and returns `summarize`d metrics.

    `to_global` turns a process-local batch into global arrays; the sums are global already."""
    totals = None
    for batch in batches:
        sums = eval_step(state, to_global(batch))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("the eval split is empty")
    return summarize(jax.tree.map(np.asarray, jax.device_get(totals)))
