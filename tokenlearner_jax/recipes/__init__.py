"""The pieces every config file shares; a config file itself is the whole recipe (configs/*.py).

    from tokenlearner_jax import models, recipes

    def get_config(arg=None):
        config = recipes.base("classification")           # trainer fields + the task's fields
        config.dataset = recipes.dataset(name="digits", image_size=32, augment="shift", shift_pixels=3)
        config.model = models.config("vit", variant="S/4", num_classes=10, ...)
        config.optimizer = recipes.optimizer(learning_rate=2e-3, warmup_steps=200, weight_decay=0.05)
        config.batch_size, config.num_train_steps = 128, 1500
        ...
        return config

`base` gives every field the trainer and the task read, with its default, so that a command-line
override of a field that does not exist (or of the wrong type) is refused before anything runs.
Model defaults live with each model (`models.config(name, ...)`), dataset defaults with the data
(`data/config.py`), task and optimizer defaults with the task (`tasks/`). `from_json` rebuilds a
run's config from the config.json the trainer writes into its workdir.
"""

import json
import os

import ml_collections

from tokenlearner_jax.data.config import default_dataset_config
from tokenlearner_jax.evaluate.fewshot import L2_REGS, SHOTS
from tokenlearner_jax.recipes import sweeps  # noqa: F401  (config files with get_sweep use recipes.sweeps)
from tokenlearner_jax.tasks import optimizer as optimizer_lib

# ImageNet-1k's training split, for epoch-based warmups.
IMAGENET_TRAIN_SIZE = 1_281_167
DEFAULT_WEIGHT_DECAY_EXCLUDE = optimizer_lib.DEFAULT_WEIGHT_DECAY_EXCLUDE
# Fields renamed since runs were first trained: (old dotted path, new dotted path).
RENAMED_FIELDS = (("model.token_learner.stage", "model.token_learner.location"),)


def trainer_defaults() -> dict:
    """Every field of the training loop (train/trainer.py), with its default."""
    return dict(
        seed=0,
        batch_size=256,  # global, over all processes and devices
        eval_batch_size=256,
        num_train_steps=-1,  # > 0 wins over num_epochs
        num_epochs=1.0,
        # Device mesh; one axis may be -1 ("the rest"). Parameters shard over fsdp and model by
        # `sharding_rules` (empty: layers.partitioning.DEFAULT_RULES), the batch over data and fsdp.
        mesh=dict(data=-1, fsdp=1, model=1),
        sharding_rules=(),
        # Optimizer state (e.g. Adam's moments) split over the data axis too, each data-parallel device
        # updating its share of the parameters: the state is then held once, not once per device.
        shard_optimizer_state=True,
        log_every_steps=50,
        eval_every_steps=0,  # 0: only at the end
        checkpoint_every_steps=1000,
        keep_checkpoints=3,
        async_checkpointing=True,
        # False: a NaN/Inf loss, metric or state stops the run naming the step; True: such steps are
        # skipped (the update is not applied) and counted as train/skipped_steps.
        skip_nonfinite_steps=False,
        # Start a fresh run from a checkpoint (weights/init_from.py): '' trains from scratch; otherwise a
        # workdir of ours or the output of `python -m tokenlearner_jax.convert`, a vit_jax / big_vision .npz,
        # or a timm .safetensors. Patterns are regexes on parameter names such as 'head/kernel'.
        init_from=dict(
            path="",
            include=(),  # non-empty: load only the parameters matching one; the rest start fresh
            exclude=(),  # parameters that start fresh; matching source parameters are ignored
            fresh_if_missing=(r"(^|/)token_learner", r"(^|/)token_fuser"),  # may be absent from the source
            reinit_if_shape_differs=(r"^head/",),  # re-initialised when the shapes differ (number of classes)
            # A 2D patch kernel loaded into a 3D (tubelet) one (weights/inflate.py): 'central_frame' (the 2D
            # kernel at the middle frame, zeros elsewhere) or 'filter' (repeated over the frames, divided by
            # their number).
            inflate="central_frame",
        ),
        # Few-shot linear evaluation of the frozen features (evaluate/fewshot_evaluator.py): every
        # `every_steps` steps and at the end of training (0: only with main.py --mode=fewshot). Datasets
        # not prepared here are reported and skipped.
        fewshot=dict(
            every_steps=0,
            datasets=("digits", "caltech101", "cifar100", "dtd", "oxford_iiit_pet", "imagenet2012"),
            shots=SHOTS,
            seeds=3,
            l2_regs=L2_REGS,  # the regulariser grid; one is chosen by leave-one-out on the shots
        ),
    )


def base(task: str = "classification") -> ml_collections.ConfigDict:
    """Every field of a run of `task` with its default: the loop's, the task's, and `config.dataset`.
    `config.model` is left for the recipe to set (`models.config(name, ...)`)."""
    from tokenlearner_jax import tasks  # the task registry imports jax, flax and the models

    config = ml_collections.ConfigDict(trainer_defaults())
    config.task = task
    config.update(ml_collections.ConfigDict(tasks.get(task).default_config()))
    config.dataset = default_dataset_config()
    return config


def dataset(**fields) -> ml_collections.ConfigDict:
    """`config.dataset`: data/config.py's defaults with `fields` set (an unknown field is an error)."""
    config = default_dataset_config()
    _update(config, fields, "config.dataset")
    return config


def optimizer(**fields) -> ml_collections.ConfigDict:
    """`config.optimizer`: tasks/optimizer.py's defaults with `fields` set (an unknown field is an error)."""
    return ml_collections.ConfigDict(optimizer_lib.default_config(**fields))


def _update(config: ml_collections.ConfigDict, fields: dict, path: str) -> None:
    for key, value in fields.items():
        if key not in config:
            raise ValueError(f"{path}.{key}: no such field (fields: {sorted(config)})")
        config[key] = value


def _rename_old_fields(saved: dict) -> dict:
    for old, new in RENAMED_FIELDS:
        *parents, name = old.split(".")
        node = saved
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict) and name in node:
            node[new.rsplit(".", 1)[-1]] = node.pop(name)
    return saved


def from_json(saved: dict) -> ml_collections.ConfigDict:
    """The ConfigDict of a run from its config.json contents: the defaults of its task, dataset and model,
    updated with the saved values (fields added since the run was trained keep their defaults; fields
    renamed since are carried over to their new names)."""
    from tokenlearner_jax import models  # imports flax and every backbone

    saved = _rename_old_fields(json.loads(json.dumps(saved)))
    config = base(saved.get("task", "classification"))
    model = saved.pop("model")
    config.model = models.config(model["name"])
    config.model.update(model)
    config.update(saved)
    return config


def from_workdir(workdir: str) -> ml_collections.ConfigDict:
    """The config a run was trained with, from the config.json the trainer wrote into its workdir."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: pass --config=configs/X.py (with the run's overrides)")
    with open(path, encoding="utf-8") as f:
        return from_json(json.load(f))
