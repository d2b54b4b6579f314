"""Image and video classification: one model, one optimizer, softmax (or sigmoid) cross-entropy.

The train state is `TrainState` (its fields are the checkpoint layout). One step: targets from the
labels (label smoothing), optional Mixup / CutMix on device, the model in train mode (batch
statistics updated when it has any), the loss, gradients (accumulated over `grad_accum_steps` slices
of the batch), the optimizer update and the EMA of the parameters (`config.ema`). Evaluation sums the
loss and the top-1 / top-5 hits over the whole split, padding masked out; with several views per
example (video clips x crops, `[batch, views, ...]`) the logits are averaged over the views. With the
EMA on, its parameters are evaluated beside the trained ones as 'eval_ema/*'.

Config fields of this task (`default_config`): loss, label_smoothing, mixup, ema, grad_accum_steps and
the optimizer section.
"""

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from clu import parameter_overview

from tokenlearner_jax import data, models
from tokenlearner_jax.models import flops
from tokenlearner_jax.tasks import losses, mixup, optimizer as optimizer_lib
from tokenlearner_jax.tasks.base import EvalAccumulator, Task, ema_update, register

MIXUP_KEY = 0x6D6978  # fold_in constant of the mixup / cutmix key


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-trainable variable collections (e.g. batch statistics); {} for ViT
    ema_params: Any  # exponential moving average of `params` (config.ema); {} while it is off


def default_config() -> dict:
    """The fields of `config` this task reads, with their defaults."""
    return dict(
        loss="softmax_xent",  # or 'sigmoid_xent' (JFT-style, the TokenLearner paper's ImageNet recipe)
        label_smoothing=0.0,
        # Mixup / CutMix on device in the train step (tasks/mixup.py); off while both alphas are 0.
        mixup=dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, prob=1.0),
        # Exponential moving average of the parameters, kept in the train state (checkpointed) and evaluated
        # beside them as eval_ema/*; decay 0 turns it off. dynamic_decay: min(decay, (1 + step) / (10 + step)).
        ema=dict(decay=0.0, dynamic_decay=True),
        grad_accum_steps=1,
        optimizer=optimizer_lib.default_config(),
    )


def check(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{field}={value!r}: expected {expected}")


def eval_sums(logits, labels, mask, *, loss_name: str) -> dict:
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


class SumAccumulator(EvalAccumulator):
    """Adds `eval_sums` over the split: loss, num_examples, accuracy (top-1) and top5_accuracy."""

    def __init__(self):
        self.totals = None

    def add(self, outputs):
        self.totals = outputs if self.totals is None else jax.tree.map(np.add, self.totals, outputs)

    def result(self) -> dict:
        if self.totals is None:
            raise ValueError("the eval split is empty")
        count = max(float(self.totals["count"]), 1.0)
        out = {"loss": float(self.totals["loss"]) / count, "num_examples": float(self.totals["count"]),
               "accuracy": float(self.totals["correct_top1"]) / count}
        if "correct_top5" in self.totals:
            out["top5_accuracy"] = float(self.totals["correct_top5"]) / count
        return out


@register("classification")
class Classification(Task):
    """`config.model` trained with `config.optimizer` on (image or video, class) pairs."""

    optimizer_state_fields = ("opt_state",)

    default_config = staticmethod(default_config)

    def __init__(self, config, info, total_steps: int):
        super().__init__(config, info, total_steps)
        self.model = models.build(config.model)
        self.tx, self.schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)
        self.input_shape = tuple(info.image_shape)
        self.ema_enabled = config.ema.decay > 0

    @classmethod
    def validate(cls, config) -> None:
        check(config.loss in losses.LOSSES, "loss", config.loss, f"one of {losses.LOSSES}")
        check(0 <= config.label_smoothing < 1, "label_smoothing", config.label_smoothing, "in [0, 1)")
        for field in ("mixup_alpha", "cutmix_alpha"):
            check(config.mixup[field] >= 0, f"mixup.{field}", config.mixup[field], ">= 0 (0: off)")
        for field in ("switch_prob", "prob"):
            check(0 <= config.mixup[field] <= 1, f"mixup.{field}", config.mixup[field], "in [0, 1]")
        check(0 <= config.ema.decay < 1, "ema.decay", config.ema.decay, "in [0, 1) (0: off)")
        check(config.grad_accum_steps >= 1, "grad_accum_steps", config.grad_accum_steps, ">= 1")
        check(config.batch_size % config.grad_accum_steps == 0, "batch_size", config.batch_size,
              f"a multiple of grad_accum_steps={config.grad_accum_steps}")
        optimizer_lib.validate(config.optimizer)
        models.validate(config.model, data.example_shape(config.dataset))

    @classmethod
    def validate_data(cls, config, info) -> None:
        if info.num_classes == 0:
            raise ValueError(f"config.dataset.name={config.dataset.name!r} has no labels (no 'label' feature): "
                             f"task {config.task!r} needs them; only the gan task trains on unlabelled data")
        if config.model.num_classes != info.num_classes:
            raise ValueError(f"config.model.num_classes={config.model.num_classes} but dataset "
                             f"{config.dataset.name!r} has {info.num_classes} classes")

    # ------------------------------------------------------------------------------------------ state

    def init_state(self, rng) -> TrainState:
        variables = self.model.init({"params": rng, "dropout": rng},
                                    jnp.zeros((1,) + self.input_shape, jnp.float32), train=False)
        variables = dict(variables)
        params = variables.pop("params")
        variables.pop("intermediates", None)
        ema_params = jax.tree.map(jnp.copy, params) if self.ema_enabled else {}
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=self.tx.init(params),
                          model_state=variables, ema_params=ema_params)

    def variables(self, state) -> dict:
        return {"params": state.params, **state.model_state}

    # ------------------------------------------------------------------------------------------ train

    def targets(self, labels):
        """Float targets `[batch, classes]` (label smoothing applied) from int or multi-hot labels."""
        return losses.targets_from_labels(labels, self.config.model.num_classes, self.config.label_smoothing)

    def train_metrics(self, logits, labels) -> dict:
        """Per-batch training metrics besides the loss: top-1 accuracy against the (unmixed) labels."""
        correct = jnp.mean(jnp.argmax(logits, -1) == (labels if labels.ndim == 1 else jnp.argmax(labels, -1)))
        return {"train/accuracy": correct}

    def _loss(self, params, model_state, images, labels, rng):
        targets = self.targets(labels)
        if mixup.enabled(self.config.mixup):  # its key is folded off the step's key; dropout's stays as it was
            images, targets, _ = mixup.mix_batch(jax.random.fold_in(rng, MIXUP_KEY), images, targets,
                                                 self.config.mixup)
        logits, new_model_state = self.model.apply({"params": params, **model_state}, images, train=True,
                                                   rngs={"dropout": rng}, mutable=list(model_state))
        loss = jnp.mean(losses.per_example_loss(self.config.loss, logits.astype(jnp.float32), targets))
        return loss, (new_model_state, self.train_metrics(logits, labels))

    def train_step(self, state: TrainState, batch: dict, rng):
        """One optimizer step on a global batch, accumulating gradients over `grad_accum_steps` slices."""
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        accum = self.config.grad_accum_steps
        if accum == 1:
            (loss, (model_state, metrics)), grads = grad_fn(
                state.params, state.model_state, batch["image"], batch["label"], rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

            def body(carry, inputs):
                grads_sum, loss_sum, metrics_sum, model_state = carry
                index, images, labels = inputs
                (loss, (model_state, metrics)), grads = grad_fn(
                    state.params, model_state, images, labels, jax.random.fold_in(rng, index))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
                metrics_sum = jax.tree.map(jnp.add, metrics_sum, metrics)
                return (grads_sum, loss_sum + loss, metrics_sum, model_state), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            logits_shape = jax.ShapeDtypeStruct((1, self.config.model.num_classes), jnp.float32)
            metrics_zeros = jax.tree.map(lambda _: 0.0, jax.eval_shape(self.train_metrics, logits_shape,
                                                                        batch["label"][:1]))
            carry = (zeros, 0.0, metrics_zeros, state.model_state)
            (grads, loss, metrics, model_state), _ = jax.lax.scan(
                body, carry, (jnp.arange(accum), micro["image"], micro["label"]))
            grads = jax.tree.map(lambda g: g / accum, grads)
            loss = loss / accum
            metrics = jax.tree.map(lambda m: m / accum, metrics)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        ema_params = state.ema_params
        if self.ema_enabled:
            ema_params = ema_update(ema_params, params, state.step, self.config.ema.decay,
                                    self.config.ema.dynamic_decay)
        metrics = {"train/loss": loss, **metrics, "train/grad_norm": optimizer_lib.global_norm(grads),
                   "train/learning_rate": self.schedule(state.step)}
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state,
                          ema_params=ema_params), metrics

    # ------------------------------------------------------------------------------------------ eval

    def logits(self, state, images):
        """Eval-mode logits `[batch, classes]`; inputs with a views axis (`[batch, views, ...]`, e.g. video
        clips x crops) are averaged over the views."""
        views = images.shape[1] if images.ndim == len(self.input_shape) + 2 else 0
        if views:
            images = images.reshape((-1,) + images.shape[2:])
        logits = self.model.apply(self.variables(state), images, train=False)
        if views:
            logits = logits.reshape(-1, views, logits.shape[-1]).mean(axis=1)
        return logits

    def eval_step(self, state, batch: dict):
        return eval_sums(self.logits(state, batch["image"]), batch["label"], batch["mask"], loss_name=self.config.loss)

    def eval_accumulator(self) -> EvalAccumulator:
        return SumAccumulator()

    def eval_states(self, state) -> dict:
        states = {"eval": state}
        if self.ema_enabled:  # the batch statistics are the same for both
            states["eval_ema"] = state.replace(params=state.ema_params)
        return states

    # ------------------------------------------------------------------------------------------ others

    def features(self, variables: dict, images):
        """Pre-logit features `[batch, dim]` (the model sows them as intermediates/pre_logits)."""
        _, state = self.model.apply(variables, images, train=False, mutable=["intermediates"])
        return state["intermediates"]["pre_logits"][0]

    def report(self, abstract_state) -> dict:
        parameter_overview.log_parameter_overview(abstract_state.params, include_stats=False,
                                                  msg="Parameters", jax_logging_process=0)
        num_params = flops.count_params(abstract_state.params)
        macs = flops.forward_macs(self.model, self.input_shape, self.variables(abstract_state))
        logging.info("Model: %.2fM parameters, %.3f GMACs (%.3f GFLOPs) per example, XLA-counted.",
                     num_params / 1e6, macs / 1e9, 2 * macs / 1e9)
        return {"model/num_params": num_params, "model/gmacs": macs / 1e9}

    def initialize_from(self, state, init_config, report_dir):
        from tokenlearner_jax.weights import init_from  # orbax and safetensors only when a run needs them

        state = init_from.initialize(state, init_config, self.config.model, report_dir=report_dir)
        if self.ema_enabled:  # the average starts from the loaded parameters
            state = state.replace(ema_params=jax.tree.map(jnp.copy, state.params))
        return state

