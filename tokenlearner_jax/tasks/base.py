"""The contract between the trainer's loop (train/trainer.py) and a task: what is trained, and how.

The loop owns everything that does not depend on the objective: the device mesh, sharded state from
`jax.eval_shape`, checkpoints with the input position (exact resume), preemption, the non-finite
guard, logging, the eval and few-shot schedule and multi-process runs. A task owns the rest:

- its train state: a pytree with an integer `step` field (a `flax.struct.dataclass`), holding one or
  several parameter trees, optimizer states and whatever else it needs (batch statistics, an EMA).
  Leaves may be boxed with logical axis names (`nn.with_logical_partitioning`); the loop turns the
  names into shardings. The state is what a checkpoint holds, so its structure is the checkpoint
  layout;
- its train step (one update on a global batch, `step` incremented) and its training metrics;
- its eval step and the reduction of the eval outputs over a whole split (sums, or every example's
  scores for metrics such as mAP that do not decompose into sums);
- the features that few-shot evaluation regresses on, and its model report (parameters, MACs);
- starting from a checkpoint of another run (`config.init_from`), where that makes sense.

A task registers itself by name (`@register("classification")`) and `config.task` picks it. Every
method below that the loop jits is a pure function of its array arguments; the task object holds only
static things (config, models, optimizers). Helpers every task may use: `ema_update`, `all_finite`.
"""

import abc
from typing import Any, Callable, Dict, Iterable, Optional

import jax
import jax.numpy as jnp

Metrics = Dict[str, Any]
_TASKS: Dict[str, Callable] = {}


def register(name: str):
    """Class decorator: `config.task = name` builds this task."""
    def wrap(cls):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        _TASKS[name] = cls
        return cls
    return wrap


def names():
    return sorted(_TASKS)


def get(name: str):
    """The task class registered as `name`; ValueError naming config.task otherwise."""
    if name not in _TASKS:
        raise ValueError(f"config.task={name!r}: expected one of {names()}")
    return _TASKS[name]


class EvalAccumulator(abc.ABC):
    """Host-side reduction of eval outputs over a whole split. Every process sees every output in full
    (the loop replicates them), so each process holds the same result."""

    @abc.abstractmethod
    def add(self, outputs) -> None:
        """One batch's outputs of `Task.eval_step`, as NumPy arrays."""

    @abc.abstractmethod
    def result(self) -> Metrics:
        """{'loss': ..., 'accuracy': ...}: metric names without the 'eval/' prefix (the loop adds it)."""

    def files(self) -> Dict[str, str]:
        """{file name: text} written into the workdir after `result` (e.g. a per-class table), as
        '<prefix>_<name>' ('eval_per_class_ap.csv'); none by default."""
        return {}


class Task(abc.ABC):
    """One training objective. Built as `Task(config, info, total_steps)`.

    Attributes:
      config: the whole run config.
      info: the dataset's `data.DatasetInfo` (input shape, classes, split sizes).
      total_steps: the number of training steps (for schedules).
      optimizer_state_fields: the train state's fields that hold optimizer state (read and written only by
        the optimizer update), which the trainer splits over the mesh's data axis with
        config.shard_optimizer_state.
    """

    optimizer_state_fields: tuple = ()

    def __init__(self, config, info, total_steps: int):
        self.config = config
        self.info = info
        self.total_steps = total_steps

    @classmethod
    def default_config(cls) -> dict:
        """The top-level config fields (and sections) the task reads, with their defaults."""
        return {}

    @classmethod
    def validate(cls, config) -> None:
        """Raises ValueError naming the field for a bad value of the task's own config fields and models
        (before any dataset is read: `data.example_shape(config.dataset)` gives the input shape)."""

    @classmethod
    def validate_data(cls, config, info) -> None:
        """Raises ValueError when the dataset (its `DatasetInfo`, once read) does not suit the config."""

    @abc.abstractmethod
    def init_state(self, rng):
        """A fresh train state (`step` 0); may hold logically boxed leaves."""

    @abc.abstractmethod
    def train_step(self, state, batch: dict, rng):
        """(new state with step + 1, {'train/loss': ..., ...}) for one global batch
        ({'image': [batch, ...], 'label': ...}); `rng` is this step's key."""

    @abc.abstractmethod
    def eval_step(self, state, batch: dict):
        """Outputs of one global eval batch ({'image', 'label', 'mask'}); read by `eval_accumulator`."""

    @abc.abstractmethod
    def eval_accumulator(self) -> EvalAccumulator:
        """A fresh accumulator for one pass over the eval split."""

    def eval_states(self, state) -> Dict[str, Any]:
        """{metric prefix: state to evaluate}: 'eval' for the state itself, and e.g. 'eval_ema' for a
        moving average of its parameters."""
        return {"eval": state}

    def variables(self, state) -> dict:
        """The model variables of a state ({'params': ..., other collections}) that `features` reads."""
        raise NotImplementedError(f"task {type(self).__name__} has no model variables to extract")

    def features(self, variables: dict, images):
        """Frozen features `[batch, dim]` of images for few-shot linear evaluation."""
        raise NotImplementedError(f"task {type(self).__name__} has no features for few-shot evaluation")

    def report(self, abstract_state) -> Metrics:
        """Step-0 facts about the model, e.g. {'model/num_params': ..., 'model/gmacs': ...}."""
        return {}

    def initialize_from(self, state, init_config, report_dir: Optional[str]):
        """`state` with parameters taken from `init_config.path` (config.init_from)."""
        raise NotImplementedError(f"task {type(self).__name__} does not support config.init_from")


def ema_update(ema_tree, tree, step, decay: float, dynamic_decay: bool):
    """ema <- d * ema + (1 - d) * tree after the update of step `step` (0-based). With `dynamic_decay`,
    d = min(decay, (1 + step) / (10 + step)), so the average forgets the random initialisation quickly
    early in training (TensorFlow's ExponentialMovingAverage with num_updates, as the official MaxViT
    trainer uses it)."""
    d = jnp.asarray(decay, jnp.float32)
    if dynamic_decay:
        count = step.astype(jnp.float32)
        d = jnp.minimum(d, (1.0 + count) / (10.0 + count))
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_tree, tree)


def all_finite(trees: Iterable) -> jax.Array:
    """True when every floating-point leaf of every tree is free of NaN and Inf (a boolean scalar)."""
    checks = [jnp.all(jnp.isfinite(leaf)) for tree in trees for leaf in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating)]
    return jnp.all(jnp.stack(checks)) if checks else jnp.asarray(True)
