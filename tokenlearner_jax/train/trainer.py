"""The training loop: one jax.jit step over a named device mesh, one process or many, for any task.

`run(config, workdir)` trains, evaluates, checkpoints and resumes. In order:
  mesh -> data -> task (models, optimizers) -> sharded state (shapes from one abstract trace first) ->
  restore the latest checkpoint if any -> loop (step, log, checkpoint, evaluate) -> final eval.

The loop knows nothing of the objective: `config.task` picks a task (tasks/), which owns the train
state, the step, the evaluation and the few-shot features (tasks/base.py). The loop adds the step's
key, the non-finite guard (a step whose metrics or new state hold NaN or Inf is skipped and counted,
or stops the run before anything is saved), sharding, checkpoints with the input position, signals,
logging and the eval / few-shot schedule.
"""

import contextlib
import json
import logging
import math
import os
import time

import flax
import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils

from tokenlearner_jax import data, tasks
from tokenlearner_jax.evaluate.fewshot_evaluator import FewShotEvaluator
from tokenlearner_jax.tasks.base import all_finite
from tokenlearner_jax.train import allocator, checkpoint as checkpoint_lib, console
from tokenlearner_jax.train import mesh as mesh_lib, preemption, state_init
from tokenlearner_jax.train import workdir as workdir_lib
from tokenlearner_jax.train.metrics_log import MetricsLog, TrainWindow
from tokenlearner_jax.weights import init_from

# The state's initialisation runs once per run, so it is compiled with LLVM's level-1 optimisation, not the
# default level 2: it compiles in 60-75% of the CPU time and gives bit-identical states (lever
# init_llvm_o1 in experiments/results/levers.md; tests/test_trainer.py checks the identity).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}
# On CPU, the train and eval steps are scheduled by XLA's memory-optimised scheduler: it orders independent
# operations so that fewer buffers are alive at once, which made the train step's temporary buffer 23-30%
# smaller and its peak RSS 13-22% lower, and the step a little faster, with less memory to fault in and
# zero (lever xla_memory_scheduler in experiments/results/levers.md).
CPU_STEP_COMPILER_OPTIONS = {"xla_cpu_scheduler_type": "CPU_SCHEDULER_TYPE_MEMORY_OPTIMIZED"}


def step_compiler_options() -> dict | None:
    """XLA options for the jitted train and eval steps on the default backend."""
    return CPU_STEP_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None


def _check(ok: bool, field: str, value, expected: str) -> None:
    if not ok:
        raise ValueError(f"config.{field}={value!r}: expected {expected}")


def validate(config) -> None:
    """Checks every section of a run config before anything is built or read: the loop's fields here,
    the mesh's (train/mesh.py), init_from's (weights/init_from.py), the dataset's (data/config.py) and the
    task's, which checks its models against the dataset's example shape (tasks/). Raises ValueError
    naming the field, its value and what is expected."""
    for field in ("batch_size", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
                  "keep_checkpoints"):
        _check(config[field] > 0, field, config[field], "> 0")
    _check(config.num_train_steps > 0 or config.num_epochs > 0, "num_train_steps", config.num_train_steps,
           "> 0, or num_epochs > 0")
    _check(config.eval_every_steps >= 0, "eval_every_steps", config.eval_every_steps, ">= 0 (0: only at the end)")
    _check(config.fewshot.every_steps >= 0, "fewshot.every_steps", config.fewshot.every_steps,
           ">= 0 (0: only with --mode=fewshot)")
    mesh_lib.validate(config.mesh)
    init_from.validate(config.init_from)
    data.validate(config.dataset)
    tasks.get(config.task).validate(config)


def resolve_dataset(config):
    """DatasetInfo for the config (the dataset's files or records are opened), checked by the task; the
    synthetic datasets take the model's class count unless set."""
    if config.dataset.name.startswith("synthetic") and config.dataset.num_classes <= 0 and "model" in config:
        with config.dataset.unlocked():
            config.dataset.num_classes = config.model.num_classes
    info = data.get_info(config.dataset)
    tasks.get(config.task).validate_data(config, info)
    return info


def num_train_steps(config, info) -> int:
    if config.num_train_steps > 0:
        return config.num_train_steps
    return max(1, math.ceil(config.num_epochs * info.num_train / config.batch_size))


class Setup:
    """Everything built from a config before the loop: mesh, task, sharded state and the jitted steps.
    Shared by training, evaluation of a checkpoint and few-shot evaluation."""

    def __init__(self, config, info, total_steps: int, devices=None):
        self.config = config
        self.info = info
        self.mesh = mesh_lib.make_mesh(config.mesh, devices)
        mesh_lib.validate_batch_sizes(config, self.mesh.shape["data"] * self.mesh.shape["fsdp"], jax.process_count())
        self.rules = mesh_lib.logical_rules(config.sharding_rules)
        self.task = tasks.get(config.task)(config, info, total_steps)
        self.batch_sharding = mesh_lib.batch_sharding(self.mesh)
        self.replicated = mesh_lib.replicated(self.mesh)

        with self.context():
            init_state, abstract_boxed = state_init.trace(self.task.init_state, jax.random.key(config.seed))
            self.state_shardings = mesh_lib.shardings_for(abstract_boxed, self.mesh, self.rules)
        # Random draws batched only where every device holds the whole state (one device, or data-parallel
        # ones): where it is split, each parameter keeps its own draw, which XLA's partitioner can generate
        # shard by shard.
        self.batch_draws = all(sharding.is_fully_replicated for sharding in jax.tree.leaves(self.state_shardings))
        abstract_state = flax.core.meta.unbox(abstract_boxed)
        if config.shard_optimizer_state:
            self.state_shardings = self._split_optimizer_state(abstract_state)
        self._init = jax.jit(lambda rng: flax.core.meta.unbox(init_state(rng, batch_draws=self.batch_draws)),
                             out_shardings=self.state_shardings, compiler_options=INIT_COMPILER_OPTIONS)
        self.abstract_state = checkpoint_lib.abstract_with_shardings(abstract_state, self.state_shardings)
        self.train_step = jax.jit(self._train_step, in_shardings=(self.state_shardings, self.batch_sharding),
                                  out_shardings=(self.state_shardings, self.replicated, self.replicated),
                                  donate_argnums=0, compiler_options=step_compiler_options())
        self.eval_step = jax.jit(self.task.eval_step, in_shardings=(self.state_shardings, self.batch_sharding),
                                 out_shardings=self.replicated, compiler_options=step_compiler_options())

    def _split_optimizer_state(self, abstract_state):
        """`state_shardings` with each array of the task's optimizer state split over the data axis as well
        (`mesh_lib.split_over_data`): data-parallel devices then hold one copy of the parameters but a share
        of their optimizer state, each updating its share of the parameters (ZeRO stage 1)."""
        split = lambda sharding, value: mesh_lib.split_over_data(sharding, value.shape)
        return self.state_shardings.replace(**{
            field: jax.tree.map(split, getattr(self.state_shardings, field), getattr(abstract_state, field))
            for field in self.task.optimizer_state_fields})

    @contextlib.contextmanager
    def context(self):
        """Mesh and logical-axis rules, active while tracing, compiling and running the steps."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield

    def init_state(self):
        """The initial train state, in memory of small pages (`allocator.small_pages`: it is touched once).
        The initialisation program is dropped once it has run (a run needs it once; it holds 0.1 GB for
        ViT-Ti/16), and the memory its compilation freed is given back."""
        with self.context(), allocator.small_pages():
            state = jax.block_until_ready(self._init(jax.random.key(self.config.seed)))
        self._init.clear_cache()
        allocator.release_free_memory()
        return state

    def compile_train_step(self, state, batch: dict):
        """`train_step` compiled for the shapes and shardings of `state` and `batch`, after which the
        memory the compiler freed is given back, so that it does not sit under every step's temporary
        buffer: peak RSS 0.3-2.0 GB lower (lever release_compile_memory in experiments/results/levers.md)."""
        with self.context():
            compiled = self.train_step.lower(state, batch).compile()
        allocator.release_free_memory()
        return compiled

    def to_global(self, batch: dict) -> dict:
        """Process-local numpy batch -> global arrays sharded over the data-parallel axes."""
        return {name: jax.make_array_from_process_local_data(self.batch_sharding, np.asarray(value))
                for name, value in batch.items()}

    def _train_step(self, state, batch: dict):
        """The task's step with this step's key, and the non-finite guard: returns (state, metrics,
        finite), where `finite` says whether every metric and every floating-point array of the new
        state is free of NaN and Inf. With config.skip_nonfinite_steps a step that is not finite leaves
        the state as it was (its step still counts) and is counted in 'train/skipped'."""
        rng = jax.random.fold_in(jax.random.key(self.config.seed), state.step)
        new_state, metrics = self.task.train_step(state, batch, rng)
        finite = all_finite([metrics, new_state])
        if self.config.skip_nonfinite_steps:
            kept = jax.tree.map(lambda new, old: jax.numpy.where(finite, new, old), new_state, state)
            new_state = kept.replace(step=new_state.step)
            metrics = dict(metrics, **{"train/skipped": 1.0 - finite.astype(jax.numpy.float32)})
        return new_state, metrics, finite

    def evaluate(self, state, workdir: str | None = None) -> dict:
        """Metrics of the whole eval split for every state the task evaluates ('eval/*', and e.g.
        'eval_ema/*'); files the task's accumulator produces go into `workdir` (process 0)."""
        metrics = {}
        for prefix, variant in self.task.eval_states(state).items():
            accumulator = self.task.eval_accumulator()
            batches = data.eval_batches(self.config.dataset, global_batch_size=self.config.eval_batch_size,
                                        process_index=jax.process_index(), process_count=jax.process_count())
            skipped = 0.0  # unreadable files left out of the split (data/pipeline.py), this process's
            with self.context():
                for batch in batches:
                    skipped += float(np.sum(batch.get("skipped", 0.0)))
                    accumulator.add(jax.tree.map(np.asarray, jax.device_get(
                        self.eval_step(variant, self.to_global(batch)))))
            metrics.update({f"{prefix}/{name}": value for name, value in accumulator.result().items()})
            if jax.process_count() > 1:
                skipped = float(np.sum(multihost_utils.process_allgather(np.float32(skipped))))
            if skipped:
                metrics[f"{prefix}/skipped_files"] = skipped
            if workdir and jax.process_index() == 0:
                for name, text in accumulator.files().items():
                    with open(os.path.join(workdir, f"{prefix}_{name}"), "w", encoding="utf-8") as f:
                        f.write(text)
        allocator.release_free_memory()  # what compiling the eval step freed
        return metrics

    def fewshot_evaluator(self) -> FewShotEvaluator:
        """Few-shot evaluation of the task's features, on this setup's mesh."""
        shardings = self.task.variables(self.state_shardings)

        def features(variables, batch):
            return self.task.features(variables, batch["image"]), batch["label"], batch["mask"]

        step = jax.jit(features, in_shardings=(shardings, self.batch_sharding), out_shardings=self.replicated)
        return FewShotEvaluator(self.config, step, self.to_global, self.context)


def _check_finite(window, skip: bool):
    """Raises FloatingPointError naming the first step whose metrics or new state hold NaN or Inf
    (unless `skip`, where such steps were not applied and are only counted)."""
    if skip:
        return
    for step, metrics, finite in window:
        if bool(finite):
            continue
        bad = [f"{name} is {float(value)}" for name, value in metrics.items() if not np.isfinite(float(value))]
        what = ", ".join(bad) if bad else "the parameters or optimizer state after the update hold NaN or Inf"
        raise FloatingPointError(
            f"step {step}: {what}; stopped without writing a checkpoint of the bad values "
            f"(the last checkpoint is intact). Lower the learning rate, or set "
            f"config.skip_nonfinite_steps=True to skip such steps.")


def _summary(window: TrainWindow, batch_size: int, elapsed: float, skip: bool) -> dict:
    """Training metrics averaged over the steps since the last log line, with the rates. In the first
    window after a resume, the steps carried in from the checkpoint count towards the rates too, which
    overstates them for that one window (rates are timings, never compared across runs)."""
    summary = window.summary(sums=("train/skipped",))
    summary["train/steps_per_sec"] = len(window) / elapsed
    summary["train/examples_per_sec"] = len(window) * batch_size / elapsed
    if skip:
        summary["train/skipped_steps"] = summary.pop("train/skipped")
    return summary


def _say(message: str) -> None:
    if jax.process_index() == 0:
        console.say(message)


def _eval_logged(log: MetricsLog, step: int) -> bool:
    """Whether `step`'s evaluation is in metrics.jsonl, agreed on by all processes (process 0 reads the file)."""
    logged = np.asarray([log.has(step, "eval/")], np.int32)
    if jax.process_count() > 1:
        logged = multihost_utils.broadcast_one_to_all(logged)
    return bool(logged[0])


def run(config, workdir: str, *, allow_config_change: bool = False, verbose: bool = False):
    """Trains `config` in `workdir`, resuming from its latest intact checkpoint.

    One run per workdir (workdir.py's lock: WorkdirBusyError), and no resume under a config that
    changes the train state or the data order unless `allow_config_change` (ConfigChangedError); a
    damaged checkpoint is quarantined and the previous one resumed (checkpoint.py). Returns (final
    train state, final eval metrics). Raises preemption.Preempted after writing a checkpoint when
    SIGTERM or SIGINT arrives during the steps (main.py installs the guard that exits at once during
    start-up; called in-process without it, signals are only watched during the steps)."""
    validate(config)
    checkpoint_lib.check_writable(workdir)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    installed = preemption.installed()
    guard = installed or preemption.PreemptionGuard()
    guard.watch_checkpoints(checkpoint_dir)
    lock = workdir_lib.acquire_for_run(workdir)
    if lock:
        guard.at_exit(lock.release)
    try:
        workdir_lib.check_config(workdir, config, allow_change=allow_config_change, checkpoint_dir=checkpoint_dir)
        return _train(config, workdir, guard, verbose)
    finally:
        if lock:
            lock.release()
        if not installed:
            guard.close()


def _train(config, workdir: str, guard, verbose: bool):
    info = resolve_dataset(config)
    total_steps = num_train_steps(config, info)
    process_count = jax.process_count()
    setup = Setup(config, info, total_steps)
    logging.info("Mesh %s over %d devices in %d processes; %d steps of batch %d.",
                 dict(setup.mesh.shape), jax.device_count(), process_count, total_steps, config.batch_size)

    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints,
                                               async_save=config.async_checkpointing, verbose=verbose)
    train_iter = data.train_iterator(config.dataset, global_batch_size=config.batch_size, seed=config.seed,
                                     process_index=jax.process_index(), process_count=process_count)
    restored = checkpointer.restore_latest(setup.abstract_state, os.path.join(workdir, "damaged_checkpoints"))
    if restored:
        start_step, state = restored.step, restored.state
        train_iter.set_state(restored.iterator_state)
        window = TrainWindow.from_json(restored.extra.get("train_window"))
    else:
        start_step, state, window = 0, setup.init_state(), TrainWindow()
        if config.init_from.path:  # a fresh run that starts from another checkpoint
            state = setup.task.initialize_from(state, config.init_from, report_dir=workdir)
    workdir_lib.write_config(workdir, config)
    log = MetricsLog(workdir, resume_step=start_step)
    report = setup.task.report(setup.abstract_state)
    if not start_step:
        log.write(0, report)
    _say(console.startup_summary(config, info, report, setup.mesh, total_steps, workdir, start_step))
    for warning in console.accelerator_warnings(config):
        logging.warning("%s", warning)
    is_eval_step = lambda step: (config.eval_every_steps and step % config.eval_every_steps == 0) or step == total_steps
    if start_step and is_eval_step(start_step) and not _eval_logged(log, start_step):
        # Killed after the checkpoint of an eval step was committed but before its evaluation was logged.
        log.write(start_step, setup.evaluate(state, workdir))

    progress = console.Progress(total_steps)
    fewshot_every = config.fewshot.every_steps
    fewshot = setup.fewshot_evaluator() if fewshot_every else None
    skip = config.skip_nonfinite_steps
    unchecked, window_start = [], time.time()  # (step, metrics, finite) not yet checked for NaN / Inf
    eval_metrics, train_step = {}, None
    try:
        with setup.context(), guard.deferred():
            for step in range(start_step + 1, total_steps + 1):
                batch = setup.to_global(next(train_iter))
                if train_step is None:
                    train_step = setup.compile_train_step(state, batch)
                    window_start = time.time()  # the first line's rates are of training, not compiling
                state, metrics, finite = train_step(state, batch)
                unchecked.append((step, metrics, finite))
                window.add(step, metrics)
                checkpointer.raise_if_save_failed()
                last = step == total_steps
                save = step % config.checkpoint_every_steps == 0 or last
                if step % config.log_every_steps == 0 or save:
                    _check_finite(unchecked, skip)
                    unchecked = []
                    summary = _summary(window, config.batch_size, time.time() - window_start, skip)
                    log.write(step, summary)
                    _say(progress.line(step, summary))
                    window.clear()
                    window_start = time.time()
                stop = guard.requested()
                if save or stop:
                    _check_finite(unchecked, skip)
                    unchecked = []
                    # The step's temporary buffer is not kept for the next one while the state is copied out.
                    allocator.release_free_memory()
                    checkpointer.save(step, state, train_iter.get_state(), force=True,
                                      extra={"train_window": window.to_json()})
                    _say(f"checkpoint of step {step} -> {checkpointer.directory}/{step}")
                if stop:
                    checkpointer.wait()
                    raise preemption.Preempted(step, guard.signal_name)
                if is_eval_step(step):
                    eval_metrics = setup.evaluate(state, workdir)
                    log.write(step, eval_metrics)
                    _say(console.format_metrics(step, eval_metrics))
                if fewshot_every and (step % fewshot_every == 0 or last):
                    fewshot_metrics = fewshot.run(setup.task.variables(state))
                    allocator.release_free_memory()  # what compiling the feature step freed
                    log.write(step, fewshot_metrics)
                    _say(console.format_metrics(step, fewshot_metrics))
            checkpointer.close()  # inside the deferred block: the last write finishes before a signal ends the run
        if start_step >= total_steps:
            logging.info("Nothing to train: the checkpoint of step %d is the last step.", start_step)
            eval_metrics = setup.evaluate(state, workdir)
            _say(console.format_metrics(start_step, eval_metrics))
    finally:
        log.close()
    _say(console.where_results_went(workdir))
    return state, eval_metrics


def evaluate_checkpoint(config, workdir: str) -> dict:
    """Evaluates the latest checkpoint of `workdir` on the eval split and logs the metrics."""
    validate(config)
    info = resolve_dataset(config)
    setup = Setup(config, info, num_train_steps(config, info))
    checkpointer = checkpoint_lib.Checkpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints, async_save=False)
    step = checkpointer.latest_step()
    if step is None:
        raise FileNotFoundError(f"no checkpoint in {os.path.join(workdir, 'checkpoints')}")
    state = checkpointer.load(step, setup.abstract_state, with_data=False).state
    checkpointer.close()
    metrics = setup.evaluate(state, workdir)
    logging.info("Checkpoint of step %d: %s", step, json.dumps(metrics))
    _say(console.format_metrics(step, metrics))
    return metrics


def fewshot_checkpoint(config, workdir: str) -> dict:
    """Few-shot evaluation (`config.fewshot`) of the latest checkpoint under `workdir` (a training workdir
    or the output of `tokenlearner_jax.convert`); the metrics go to its metrics.jsonl and TensorBoard.

    Only the model variables are read, and the training dataset is not needed: the model's input is
    `config.dataset.image_size` square."""
    validate(config)
    size = config.dataset.image_size
    info = data.DatasetInfo(name=config.dataset.name, num_classes=config.model.num_classes,
                            image_shape=(size, size, 3), num_train=0, num_eval=0, multi_label=False)
    setup = Setup(config, info, total_steps=1)
    variables, step = init_from.restore_variables(workdir, setup.task.variables(setup.abstract_state))
    evaluator = setup.fewshot_evaluator()
    metrics = evaluator.run(variables)
    log = MetricsLog(workdir, resume_step=step)
    log.write(step, metrics)
    log.close()
    _say(console.format_metrics(step, metrics))
    logging.info("Few-shot evaluation of the checkpoint of step %d: %s%s", step, json.dumps(metrics),
                 f"; skipped: {sorted(evaluator.skipped)}" if evaluator.skipped else "")
    return metrics
