"""The training loop: one jax.jit step over a named device mesh, one process or many.

`run(config, workdir)` trains, evaluates, checkpoints and resumes. In order:
  mesh -> data -> model and optimizer -> sharded state (shapes from jax.eval_shape first) ->
  restore the latest checkpoint if any -> loop (step, log, checkpoint, evaluate) -> final eval.
"""

import contextlib
import json
import logging
import math
import os
import time
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from clu import parameter_overview, periodic_actions
from jax.experimental import multihost_utils

from tokenlearner_jax import config_lib, data, models
from tokenlearner_jax.evaluate import classification
from tokenlearner_jax.evaluate.fewshot_evaluator import FewShotEvaluator
from tokenlearner_jax.models import flops
from tokenlearner_jax.train import checkpoint as checkpoint_lib
from tokenlearner_jax.weights import init_from
from tokenlearner_jax.tasks import losses, mixup, optimizer as optimizer_lib
from tokenlearner_jax.train import mesh as mesh_lib, preemption
from tokenlearner_jax.train.metrics_log import MetricsLog


MIXUP_KEY = 0x6D6978  # fold_in constant of the mixup / cutmix key


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    model_state: Any  # non-trainable variable collections (e.g. batch statistics); {} for ViT
    ema_params: Any  # exponential moving average of `params` (config.ema); {} while it is off


def resolve_dataset(config):
    """DatasetInfo for the config; the synthetic dataset takes the model's class count unless set."""
    if config.dataset.name == "synthetic" and config.dataset.num_classes <= 0:
        with config.dataset.unlocked():
            config.dataset.num_classes = config.model.num_classes
    info = data.get_info(config.dataset)
    if info.num_classes != config.model.num_classes:
        raise ValueError(f"config.model.num_classes={config.model.num_classes} but dataset "
                         f"{config.dataset.name!r} has {info.num_classes} classes")
    return info


def num_train_steps(config, info) -> int:
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, math.ceil(config.num_epochs * info.num_train / config.batch_size))


class Setup:
    """Everything built from a config before the loop: mesh, model, optimizer, sharded state and the
    jitted steps. Shared by training, evaluation of a checkpoint and (later) other evaluators."""

    def __init__(self, config, info, total_steps: int, devices=None):
        self.config = config
        self.info = info
        self.mesh = mesh_lib.make_mesh(config.mesh, devices)
        config_lib.validate_for_mesh(config, self.mesh.shape["data"] * self.mesh.shape["fsdp"], jax.process_count())
        self.rules = mesh_lib.logical_rules(config.sharding_rules)
        self.model = models.build(config.model)
        self.tx, self.schedule = optimizer_lib.make_optimizer(config.optimizer, total_steps)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        self.replicated = mesh_lib.replicated(self.mesh)
        self.image_shape = tuple(info.image_shape)
        self.ema_enabled = config.ema.decay > 0

        def init_boxed(rng):
            variables = self.model.init({"params": rng, "dropout": rng},
                                        jnp.zeros((1,) + self.image_shape, jnp.float32), train=False)
            variables = dict(variables)
            params = variables.pop("params")
            variables.pop("intermediates", None)
            ema_params = jax.tree.map(jnp.copy, params) if self.ema_enabled else {}
            return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                              opt_state=self.tx.init(params), model_state=variables, ema_params=ema_params)

        with self.context():
            abstract_boxed = jax.eval_shape(init_boxed, jax.random.key(config.seed))
            self.state_shardings = mesh_lib.shardings_for(abstract_boxed, self.mesh, self.rules)
            self._init = jax.jit(lambda rng: flax.core.meta.unbox(init_boxed(rng)),
                                 out_shardings=self.state_shardings)
        self.abstract_state = checkpoint_lib.abstract_with_shardings(
            flax.core.meta.unbox(abstract_boxed), self.state_shardings)
        self.train_step = jax.jit(self._train_step, in_shardings=(self.state_shardings, self.batch_sharding),
                                  out_shardings=(self.state_shardings, self.replicated), donate_argnums=0)
        self.eval_step = jax.jit(self._eval_step, in_shardings=(self.state_shardings, self.batch_sharding),
                                 out_shardings=self.replicated)

    @contextlib.contextmanager
    def context(self):
        """Mesh and logical-axis rules, active while tracing, compiling and running the steps."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def init_state(self):
        with self.context():
            return self._init(jax.random.key(self.config.seed))

    def to_global(self, batch: dict) -> dict:
        """Process-local numpy batch -> global arrays sharded over the data-parallel axes."""
        return {name: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(value))
                for name, value in batch.items()}

    def _loss(self, params, model_state, images, labels, rng):
        targets = losses.targets_from_labels(labels, self.config.model.num_classes, self.config.label_smoothing)
        if mixup.enabled(self.config.mixup):  # its key is folded off the step's key; dropout's stays as it was
            images, targets, _ = mixup.mix_batch(jax.random.fold_in(rng, MIXUP_KEY), images, targets,
                                                 self.config.mixup)
        logits, new_model_state = self.model.apply({"params": params, **model_state}, images, train=True,
                                                   rngs={"dropout": rng}, mutable=list(model_state))
        loss = jnp.mean(losses.per_example_loss(self.config.loss, logits.astype(jnp.float32), targets))
        correct = jnp.mean(jnp.argmax(logits, -1) == (labels if labels.ndim == 1 else jnp.argmax(labels, -1)))
        return loss, (new_model_state, correct)

    def _train_step(self, state: TrainState, batch: dict):
        """One optimizer step on a global batch, accumulating gradients over `grad_accum_steps` slices."""
        rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        grad_fn = jax.value_and_grad(self._loss, has_aux=True)
        accum = self.config.grad_accum_steps
        if accum == 1:
            (loss, (model_state, correct)), grads = grad_fn(
                state.params, state.model_state, batch["image"], batch["label"], rng)
        else:
            micro = jax.tree.map(lambda x: x.reshape((accum, x.shape[0] // accum) + x.shape[1:]), batch)

            def body(carry, inputs):
                grads_sum, loss_sum, correct_sum, model_state = carry
                index, images, labels = inputs
                (loss, (model_state, correct)), grads = grad_fn(
                    state.params, model_state, images, labels, jax.random.fold_in(rng, index))
                grads_sum = jax.tree.map(jnp.add, grads_sum, grads)
                return (grads_sum, loss_sum + loss, correct_sum + correct, model_state), None

            zeros = jax.tree.map(jnp.zeros_like, state.params)
            carry = (zeros, 0.0, 0.0, state.model_state)
            (grads, loss, correct, model_state), _ = jax.lax.scan(
                body, carry, (jnp.arange(accum), micro["image"], micro["label"]))
            grads = jax.tree.map(lambda g: g / accum, grads)
            loss, correct = loss / accum, correct / accum
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = jax.tree.map(jnp.add, state.params, updates)
        ema_params = self._update_ema(state.ema_params, params, state.step)
        grad_norm = optimizer_lib.global_norm(grads)
        metrics = {"train/loss": loss, "train/accuracy": correct, "train/grad_norm": grad_norm,
                   "train/learning_rate": self.schedule(state.step)}
        if self.config.skip_nonfinite_steps:
            # A step whose loss or gradients are NaN/Inf leaves the state as it was (the step still counts).
            finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
            keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
            params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
            model_state = keep(model_state, state.model_state)
            ema_params = keep(ema_params, state.ema_params)
            metrics["train/skipped"] = 1.0 - finite.astype(jnp.float32)
        new_state = TrainState(step=state.step + 1, params=params, opt_state=opt_state, model_state=model_state,
                               ema_params=ema_params)
        return new_state, metrics

    def _update_ema(self, ema_params, params, step):
        """ema <- decay * ema + (1 - decay) * params after the update of step `step` (0-based). With
        `dynamic_decay` the decay is min(decay, (1 + step) / (10 + step)), so the average forgets the
        random initialisation quickly early in training (TensorFlow's ExponentialMovingAverage with
        num_updates, as the official MaxViT trainer uses it)."""
        if not self.ema_enabled:
            return ema_params
        decay = jnp.asarray(self.config.ema.decay, jnp.float32)
        if self.config.ema.dynamic_decay:
            count = step.astype(jnp.float32)
            decay = jnp.minimum(decay, (1.0 + count) / (10.0 + count))
        return jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, params)

    def _eval_step(self, state: TrainState, batch: dict):
        images = batch["image"]
        views = images.shape[1] if images.ndim == len(self.image_shape) + 2 else 0  # [batch, views, ...]
        if views:
            images = images.reshape((-1,) + images.shape[2:])
        logits = self.model.apply({"params": state.params, **state.model_state}, images, train=False)
        if views:  # multi-view evaluation (video clips x crops): logits averaged over the views
            logits = logits.reshape(-1, views, logits.shape[-1]).mean(axis=1)
        return classification.eval_metrics(logits, batch["label"], batch["mask"], loss_name=self.config.loss)

    def evaluate(self, state) -> dict:
        """Metrics of the eval split: 'eval/*' with the parameters and, with config.ema on, 'eval_ema/*'
        with their moving average (the batch statistics are the same for both)."""
        metrics = self._evaluate_params(state)
        if self.ema_enabled:
            ema = self._evaluate_params(state.replace(params=state.ema_params))
            metrics.update({"eval_ema/" + name.split("/", 1)[1]: value for name, value in ema.items()})
        return metrics

    def _evaluate_params(self, state) -> dict:
        batches = data.eval_batches(self.config.dataset, global_batch_size=self.config.eval_batch_size,
                                    process_index=jax.process_index(), process_count=jax.process_count())
        with self.context():
            return classification.evaluate(self.eval_step, state, batches, self.to_global)


def _write_config(config, workdir):
    if jax.process_index() == 0:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            f.write(config.to_json_best_effort(indent=2, sort_keys=True))


def _log_model_report(setup: Setup, state, log: MetricsLog):
    parameter_overview.log_parameter_overview(state.params, include_stats=False,
                                              msg="Parameters", jax_logging_process=0)
    num_params = flops.count_params(state.params)
    macs = flops.forward_macs(setup.model, setup.image_shape,
                              {"params": setup.abstract_state.params, **setup.abstract_state.model_state})
    logging.info("Model: %.2fM parameters, %.3f GMACs (%.3f GFLOPs) per image, XLA-counted.",
                 num_params / 1e6, macs / 1e9, 2 * macs / 1e9)
    log.write(0, {"model/num_params": num_params, "model/gmacs": macs / 1e9})


def _restore_latest_good(checkpointer, setup: Setup, train_iter, workdir: str):
    """(step, state) of the newest checkpoint that restores, or (0, fresh state) without one.

    A checkpoint that fails to restore (damaged or missing files) is reported with its step, moved to
    `workdir/damaged_checkpoints/` (never deleted) and the next older one is tried."""
    for step in reversed(checkpointer.all_steps()):
        try:
            state, iterator_state = checkpointer.restore(step, setup.abstract_state)
        except Exception as e:  # orbax and tensorstore raise many types for damaged files
            moved = checkpointer.quarantine(step, os.path.join(workdir, "damaged_checkpoints"))
            logging.error("The checkpoint of step %d is damaged (%s: %s); moved it to %s and falling back to "
                          "an older one.", step, type(e).__name__, str(e)[:500], moved)
            continue
        train_iter.set_state(iterator_state)
        logging.info("Resumed from the checkpoint of step %d.", step)
        return step, state
    return 0, setup.init_state()


def _check_finite(window, skip: bool):
    """Raises FloatingPointError naming the first step whose loss or gradient norm is NaN or Inf
    (unless `skip`, where such steps were not applied and are only counted)."""
    if skip:
        return
    for step, metrics in window:
        for name in ("train/loss", "train/grad_norm"):
            value = float(metrics[name])
            if not np.isfinite(value):
                raise FloatingPointError(
                    f"step {step}: {name} is {value}; stopped without writing a checkpoint of the bad values "
                    f"(the last checkpoint is intact). Lower the learning rate, or set "
                    f"config.skip_nonfinite_steps=True to skip such steps.")


def _eval_logged(log: MetricsLog, step: int) -> bool:
    """Whether `step`'s evaluation is in metrics.jsonl, agreed on by all processes (process 0 reads the file)."""
    logged = np.asarray([log.has(step, "eval/accuracy")], np.int32)
    if jax.process_count() > 1:
        logged = multihost_utils.broadcast_one_to_all(logged)
    return bool(logged[0])


def run(config, workdir: str):
    """Trains `config` in `workdir`, resuming from its latest good checkpoint.

    Returns (final TrainState, final eval metrics). Raises preemption.Preempted after writing a
    checkpoint when SIGTERM or SIGINT arrives."""
    config_lib.validate(config)
    checkpoint_lib.check_writable(workdir)
    info = resolve_dataset(config)
    total_steps = num_train_steps(config, info)
    process_count = jax.process_count()
    setup = Setup(config, info, total_steps)
    logging.info("Mesh %s over %d devices in %d processes; %d steps of batch %d.",
                 dict(setup.mesh.shape), jax.device_count(), process_count, total_steps, config.batch_size)

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints,
                                               async_save=config.async_checkpointing)
    train_iter = data.train_iterator(config.dataset, global_batch_size=config.batch_size, seed=config.seed,
                                     process_index=jax.process_index(), process_count=process_count)
    start_step, state = _restore_latest_good(checkpointer, setup, train_iter, workdir)
    if not start_step and config.init_from.path:  # a fresh run that starts from another checkpoint
        state = init_from.initialize(state, config.init_from, config.model, report_dir=workdir)
        if setup.ema_enabled:  # the average starts from the loaded parameters
            state = state.replace(ema_params=jax.tree.map(jnp.copy, state.params))
    _write_config(config, workdir)
    log = MetricsLog(workdir, resume_step=start_step)
    if not start_step:
        _log_model_report(setup, state, log)
    is_eval_step = lambda step: (config.eval_every_steps and step % config.eval_every_steps == 0) or step == total_steps
    if start_step and is_eval_step(start_step) and not _eval_logged(log, start_step):
        # Killed after the checkpoint of an eval step was committed but before its evaluation was logged.
        log.write(start_step, setup.evaluate(state))

    progress = periodic_actions.ReportProgress(num_train_steps=total_steps, writer=log.writer,
                                               every_steps=config.log_every_steps)
    guard = preemption.PreemptionGuard()
    fewshot_every = config.fewshot.every_steps
    fewshot = FewShotEvaluator(config, setup) if fewshot_every else None
    window, window_start = [], time.time()
    eval_metrics = {}
    try:
        with setup.context():
            for step in range(start_step + 1, total_steps + 1):
                batch = setup.to_global(next(train_iter))
                state, metrics = setup.train_step(state, batch)
                window.append((step, metrics))
                progress(step)
                last = step == total_steps
                save = step % config.checkpoint_every_steps == 0 or last
                if step % config.log_every_steps == 0 or save:
                    _check_finite(window, config.skip_nonfinite_steps)
                    summary = {k: float(np.mean([float(m[k]) for _, m in window])) for k in window[0][1]}
                    elapsed = time.time() - window_start
                    summary["train/steps_per_sec"] = len(window) / elapsed
                    summary["train/examples_per_sec"] = len(window) * config.batch_size / elapsed
                    if config.skip_nonfinite_steps:
                        summary["train/skipped_steps"] = float(sum(float(m["train/skipped"]) for _, m in window))
                        del summary["train/skipped"]
                    log.write(step, summary)
                    window, window_start = [], time.time()
                stop = guard.requested()
                if save or stop:
                    checkpointer.save(step, state, train_iter.get_state(), force=True)
                if stop:
                    _check_finite(window, config.skip_nonfinite_steps)
                    checkpointer.wait()
                    raise preemption.Preempted(step, guard.signal_name)
                if is_eval_step(step):
                    eval_metrics = setup.evaluate(state)
                    log.write(step, eval_metrics)
                    logging.info("Step %d: %s", step, json.dumps(eval_metrics))
                if fewshot_every and (step % fewshot_every == 0 or last):
                    log.write(step, fewshot.run(state.params, state.model_state))
        checkpointer.close()
        if start_step >= total_steps:
            logging.info("Nothing to train: the checkpoint of step %d is the last step.", start_step)
            eval_metrics = setup.evaluate(state)
    finally:
        guard.close()
        log.close()
    return state, eval_metrics


def evaluate_checkpoint(config, workdir: str) -> dict:
    """Evaluates the latest checkpoint of `workdir` on the eval split and logs the metrics."""
    config_lib.validate(config)
    info = resolve_dataset(config)
    setup = Setup(config, info, num_train_steps(config, info))
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints, async_save=False)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state = checkpointer.restore_state(step, setup.abstract_state)
    checkpointer.close()
    metrics = setup.evaluate(state)
    logging.info("Checkpoint of step %d: %s", step, json.dumps(metrics))
    return metrics


def fewshot_checkpoint(config, workdir: str) -> dict:
    """Few-shot evaluation (`config.fewshot`) of the latest checkpoint under `workdir` (a training workdir
    or the output of `tokenlearner_jax.convert`); the metrics go to its metrics.jsonl and TensorBoard.

    Only the parameters are read, and the training dataset is not needed: the model's input is
    `config.dataset.image_size` square."""
    config_lib.validate(config)
    size = config.dataset.image_size
    info = data.DatasetInfo(name=config.dataset.name, num_classes=config.model.num_classes,
                            image_shape=(size, size, 3), num_train=0, num_eval=0, multi_label=False)
    setup = Setup(config, info, total_steps=1)
    abstract = {"params": setup.abstract_state.params, **setup.abstract_state.model_state}
    variables, step = init_from.restore_variables(workdir, abstract)
    params = variables.pop("params")
    evaluator = FewShotEvaluator(config, setup)
    metrics = evaluator.run(params, variables)
    log = MetricsLog(workdir, resume_step=step)
    log.write(step, metrics)
    log.close()
    logging.info("Few-shot evaluation of the checkpoint of step %d: %s%s", step, json.dumps(metrics),
                 f"; skipped: {sorted(evaluator.skipped)}" if evaluator.skipped else "")
    return metrics
