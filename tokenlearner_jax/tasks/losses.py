"""Classification losses: softmax cross-entropy with label smoothing, sigmoid cross-entropy (multi-label)."""

import jax
import jax.numpy as jnp
import optax

LOSSES = ("softmax_xent", "sigmoid_xent")


def targets_from_labels(labels, num_classes: int, label_smoothing: float = 0.0):
    """labels: int `[batch]` or multi-hot `[batch, num_classes]` -> float targets `[batch, num_classes]`."""
    targets = jax.nn.one_hot(labels, num_classes) if labels.ndim == 1 else labels.astype(jnp.float32)
    if label_smoothing:
        targets = targets * (1.0 - label_smoothing) + label_smoothing / num_classes
    return targets


def per_example_loss(name: str, logits, targets):
    """logits, targets: `[batch, num_classes]` -> `[batch]`."""
    if name == "softmax_xent":
        return optax.softmax_cross_entropy(logits, targets)
    if name == "sigmoid_xent":
        return jnp.sum(optax.sigmoid_binary_cross_entropy(logits, targets), axis=-1)
    raise ValueError(f"config.loss={name!r}: expected one of {LOSSES}")
