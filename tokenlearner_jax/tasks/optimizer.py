"""Optimizers by name, learning-rate schedules, weight-decay masks and gradient accumulation."""

import re

import optax
from flax import traverse_util

OPTIMIZERS = ("adamw", "adam", "sgd")
DECAYS = ("cosine", "linear", "constant")
# Biases, norm scales, position embeddings and class tokens get no weight decay by default.
DEFAULT_WEIGHT_DECAY_EXCLUDE = (r"/bias$", r"/scale$", r"pos_embedding$", r"/cls$", r"^cls$")


FLOAT32_MAX = 3.4028234663852886e38  # the optimizer computes in float32: a larger value is inf there

def default_config(**overrides) -> dict:
    """Every field of an optimizer section (`config.optimizer`), with `overrides` applied.

    name: 'adamw' | 'adam' | 'sgd'; learning_rate: the peak, reached after `warmup_steps` of linear
    warmup, then `decay` ('cosine' | 'linear' | 'constant') to `end_learning_rate` at the last step;
    b1, b2, eps: Adam's; momentum, nesterov: SGD's; weight_decay (decoupled for AdamW, added to the
    gradient for SGD) on every parameter whose '/'-joined name matches none of `weight_decay_exclude`;
    grad_clip_norm: clip by global norm (0: off)."""
    fields = dict(name="adamw", learning_rate=1e-3, end_learning_rate=0.0, warmup_steps=0, decay="cosine",
                  b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, weight_decay=1e-4,
                  weight_decay_exclude=DEFAULT_WEIGHT_DECAY_EXCLUDE, grad_clip_norm=1.0)
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ValueError(f"optimizer fields {unknown} do not exist; the fields are {sorted(fields)}")
    fields.update(overrides)
    return fields


def validate(opt_config, field: str = "optimizer") -> None:
    """Raises ValueError naming `config.<field>.<name>` for a bad value."""
    def check(ok, name, expected):
        if not ok:
            raise ValueError(f"config.{field}.{name}={opt_config[name]!r}: expected {expected}")

    check(opt_config.name in OPTIMIZERS, "name", f"one of {OPTIMIZERS}")
    check(opt_config.decay in DECAYS, "decay", f"one of {DECAYS}")
    for name in ("learning_rate", "end_learning_rate", "weight_decay", "grad_clip_norm", "eps"):
        value = opt_config[name]
        check(value >= 0 and value <= FLOAT32_MAX, name, f"a finite value >= 0 (at most {FLOAT32_MAX:.3g}: float32)")
    check(opt_config.warmup_steps >= 0, "warmup_steps", ">= 0")
    for name in ("b1", "b2", "momentum"):
        check(0 <= opt_config[name] < 1, name, "in [0, 1)")
    for pattern in opt_config.weight_decay_exclude:
        try:
            re.compile(pattern)
        except re.error as e:
            raise ValueError(f"config.{field}.weight_decay_exclude: bad regex {pattern!r}: {e}") from None


def learning_rate_schedule(opt_config, total_steps: int):
    """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then cosine, linear or constant decay
    to `end_learning_rate` at `total_steps`."""
    peak, warmup = opt_config.learning_rate, opt_config.warmup_steps
    end = opt_config.get("end_learning_rate", 0.0)
    decay_steps = max(total_steps - warmup, 1)
    if opt_config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
    elif opt_config.decay == "linear":
        decay = optax.linear_schedule(peak, end, decay_steps)
    elif opt_config.decay == "constant":
        decay = optax.constant_schedule(peak)
    else:
        raise ValueError(f"config.optimizer.decay={opt_config.decay!r}: expected one of {DECAYS}")
    if warmup <= 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def weight_decay_mask(params, exclude_patterns):
    """True for parameters that get weight decay: every kernel except those whose '/'-joined path
    matches one of `exclude_patterns` (regexes); biases, norm scales and position embeddings
    are excluded by the default patterns."""
    flat = traverse_util.flatten_dict(params, sep="/")
    return traverse_util.unflatten_dict(
        {path: not any(re.search(pattern, path) for pattern in exclude_patterns) for path in flat}, sep="/")


def make_optimizer(opt_config, total_steps: int):
    """(optax transformation, schedule) for `config.optimizer`."""
    schedule = learning_rate_schedule(opt_config, total_steps)
    name = opt_config.name
    exclude = tuple(opt_config.get("weight_decay_exclude", ()))
    if name == "adamw":
        base = optax.adamw(schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.get("eps", 1e-8),
                           weight_decay=opt_config.weight_decay,
                           mask=lambda params: weight_decay_mask(params, exclude))
    elif name == "adam":
        base = optax.adam(schedule, b1=opt_config.b1, b2=opt_config.b2, eps=opt_config.get("eps", 1e-8))
    elif name == "sgd":
        base = optax.chain(
            optax.add_decayed_weights(opt_config.weight_decay, mask=lambda p: weight_decay_mask(p, exclude)),
            optax.sgd(schedule, momentum=opt_config.momentum or None, nesterov=opt_config.get("nesterov", False)))
    else:
        raise ValueError(f"config.optimizer.name={name!r}: expected one of {OPTIMIZERS}")
    parts = []
    if opt_config.grad_clip_norm and opt_config.grad_clip_norm > 0:
        parts.append(optax.clip_by_global_norm(opt_config.grad_clip_norm))
    parts.append(base)
    return optax.chain(*parts), schedule


def global_norm(tree):
    return optax.tree.norm(tree)
