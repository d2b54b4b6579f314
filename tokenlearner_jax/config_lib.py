"""Defaults shared by the files under configs/, and validation of a resolved config.

A config file starts from `base_config()` and `vit_model()`, then sets what its experiment changes.
Every field exists in the defaults, so a command-line override of an unknown field or of the wrong
type is rejected by ml_collections before anything runs; `validate` then checks values that depend
on each other (image size by patch size, batch size by processes and accumulation steps, ...).
"""

import ml_collections

from tokenlearner_jax import data

DEFAULT_WEIGHT_DECAY_EXCLUDE = (r"/bias$", r"/scale$", r"pos_embedding$", r"/cls$", r"^cls$")


def vit_model(variant: str = "B/16", *, num_classes: int = 1000, classifier: str = "gap",
              token_learner: bool = False, location: float = 0.5, num_tokens: int = 8,
              version: str = "v1.1", use_fuser: bool = False) -> ml_collections.ConfigDict:
    """`config.model` for a ViT; positive width/depth/num_heads/mlp_dim/patch_size override the variant."""
    return ml_collections.ConfigDict(dict(
        name="vit",
        variant=variant,
        num_classes=num_classes,
        classifier=classifier,
        representation_size=0,
        width=-1, depth=-1, num_heads=-1, mlp_dim=-1, patch_size=-1,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        drop_path_rate=0.0,
        head_bias_init=0.0,
        dtype="float32",  # computation dtype; parameters stay float32. 'bfloat16' for mixed precision.
        token_learner=dict(enabled=token_learner, location=float(location), num_tokens=num_tokens,
                           version=version, use_fuser=use_fuser, bottleneck_dim=64),
    ))


def base_config() -> ml_collections.ConfigDict:
    """Every trainer field with its default."""
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dataset = data.default_dataset_config()
    config.model = vit_model()

    config.batch_size = 256  # global, over all processes and devices
    config.eval_batch_size = 256
    config.num_train_steps = -1  # > 0 wins over num_epochs
    config.num_epochs = 1.0
    config.grad_accum_steps = 1

    config.loss = "softmax_xent"  # or 'sigmoid_xent' (multi-label, JFT-style)
    config.label_smoothing = 0.0
    config.optimizer = ml_collections.ConfigDict(dict(
        name="adamw", learning_rate=1e-3, end_learning_rate=0.0, warmup_steps=0, decay="cosine",
        b1=0.9, b2=0.999, eps=1e-8, momentum=0.9, nesterov=False, weight_decay=1e-4,
        weight_decay_exclude=DEFAULT_WEIGHT_DECAY_EXCLUDE, grad_clip_norm=1.0))

    # Device mesh; one axis may be -1 ("the rest"). Parameters shard over fsdp and model by
    # `sharding_rules` (empty: layers.partitioning.DEFAULT_RULES), the batch over data and fsdp.
    config.mesh = ml_collections.ConfigDict(dict(data=-1, fsdp=1, model=1))
    config.sharding_rules = ()

    config.log_every_steps = 50
    config.eval_every_steps = 0  # 0: only at the end
    config.checkpoint_every_steps = 1000
    config.keep_checkpoints = 3
    config.async_checkpointing = True
    # False: a NaN/Inf loss or gradient norm stops the run naming the step; True: such steps are skipped
    # (the update is not applied) and counted as train/skipped_steps.
    config.skip_nonfinite_steps = False
    return config


def validate(config) -> None:
    """Raises ValueError naming the field, its value and what is expected."""
    def check(ok, field, value, expected):
        if not ok:
            raise ValueError(f"config.{field}={value!r}: expected {expected}")

    check(config.batch_size > 0, "batch_size", config.batch_size, "> 0")
    check(config.eval_batch_size > 0, "eval_batch_size", config.eval_batch_size, "> 0")
    check(config.grad_accum_steps >= 1, "grad_accum_steps", config.grad_accum_steps, ">= 1")
    check(config.batch_size % config.grad_accum_steps == 0, "batch_size", config.batch_size,
          f"a multiple of grad_accum_steps={config.grad_accum_steps}")
    check(config.num_train_steps > 0 or config.num_epochs > 0, "num_train_steps", config.num_train_steps,
          "> 0, or num_epochs > 0")
    check(0 <= config.label_smoothing < 1, "label_smoothing", config.label_smoothing, "in [0, 1)")
    check(config.optimizer.learning_rate >= 0, "optimizer.learning_rate", config.optimizer.learning_rate, ">= 0")
    check(config.optimizer.warmup_steps >= 0, "optimizer.warmup_steps", config.optimizer.warmup_steps, ">= 0")
    check(config.dataset.image_size > 0, "dataset.image_size", config.dataset.image_size, "> 0")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        check(config[field] > 0, field, config[field], "> 0")
    check(config.eval_every_steps >= 0, "eval_every_steps", config.eval_every_steps, ">= 0 (0: only at the end)")
    model = config.model
    for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
        if field in model:
            check(0 <= model[field] < 1, f"model.{field}", model[field], "in [0, 1)")
    if "dtype" in model:
        check(model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", model.dtype,
              "'float32', 'bfloat16' or 'float16'")
    if model.name == "vit":
        _validate_vit(config, check)


def _validate_vit(config, check):
    from tokenlearner_jax.models import vit  # models import layers only; imported late to keep this module light

    size, patch = vit.parse_variant(config.model.variant)
    patch = config.model.patch_size if config.model.patch_size > 0 else patch
    check(config.dataset.image_size % patch == 0, "dataset.image_size", config.dataset.image_size,
          f"a multiple of the patch size {patch} (config.model.variant={config.model.variant!r})")
    depth = config.model.depth if config.model.depth > 0 else vit.VARIANTS[size][1]
    tl = config.model.token_learner
    if tl.enabled:
        vit.token_learner_layer(tl.location, depth)
        check(tl.num_tokens > 0, "model.token_learner.num_tokens", tl.num_tokens, "> 0")
        check(tl.version in ("v1.1", "v1.0"), "model.token_learner.version", tl.version, "'v1.1' or 'v1.0'")


def imagenet_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 with the TokenLearner paper's recipe (../shared/reference/models.md): AdamW,
    weight decay 0.3, global-norm clip 1.0, batch 4096, 90 epochs, lr 5e-3 with 10k warmup steps and
    linear decay, sigmoid cross-entropy with the head bias initialised to -10, GAP classifier."""
    config = base_config()
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.train_split = "train[:99%]"
    config.dataset.eval_split = "validation"
    config.dataset.augment = "inception_crop"
    config.dataset.normalize = "minus_one_one"
    config.dataset.num_workers = 16
    config.model = model
    config.model.head_bias_init = -10.0
    config.model.dropout_rate = 0.0
    config.loss = "sigmoid_xent"
    config.batch_size = 4096
    config.eval_batch_size = 4096
    config.num_epochs = 90.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 5e-3
    config.optimizer.warmup_steps = 10_000
    config.optimizer.decay = "linear"
    config.optimizer.weight_decay = 0.3
    config.optimizer.grad_clip_norm = 1.0
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
