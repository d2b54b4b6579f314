"""Defaults shared by the files under configs/, and validation of a resolved config.

A config file starts from `base_config()` and `vit_model()`, then sets what its experiment changes.
Every field exists in the defaults, so a command-line override of an unknown field or of the wrong
type is rejected by ml_collections before anything runs; `validate` then checks values that depend
on each other (image size by patch size, batch size by processes and accumulation steps, ...).
"""

import ml_collections

from tokenlearner_jax import data
from tokenlearner_jax.evaluate import fewshot

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


def poolformer_model(variant: str = "S12", *, num_classes: int = 1000, mixers=("pooling",),
                     token_learner: bool = False, stage: int = 3, num_tokens: int = 8, version: str = "v1.1",
                     use_fuser: bool = False) -> ml_collections.ConfigDict:
    """`config.model` for a PoolFormer / MetaFormer (models/poolformer.py), with the variant's drop path.

    Non-empty depths / dims and a positive layer_scale_init override the variant ('S12', 'S24', 'S36',
    'M36', 'M48'); `mixers` holds one token mixer for all stages or one per stage ('pooling', 'identity',
    'attention', 'depthwise_conv', 'spatial_mlp'); token_learner.stage is 0-based (3: the fourth stage)."""
    from tokenlearner_jax.models import poolformer  # imported late, as in _validate_vit

    return ml_collections.ConfigDict(dict(
        name="poolformer",
        variant=variant,
        num_classes=num_classes,
        depths=(), dims=(),
        mixers=tuple(mixers),
        layer_scale_init=-1.0,
        drop_path_rate=poolformer.VARIANTS[variant][3],
        mlp_ratio=4,
        pool_size=3,
        attention_head_dim=32,
        conv_kernel_size=3,
        head_norm="group_norm",  # or 'pooled_layer_norm': timm's head, which its poolformer_* weights need
        dtype="float32",
        token_learner=dict(enabled=token_learner, stage=stage, num_tokens=num_tokens, version=version,
                           use_fuser=use_fuser, bottleneck_dim=64),
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
    # Mixup / CutMix on device in the train step (train/mixup.py); off while both alphas are 0.
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, prob=1.0))
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

    # Start a fresh run from a checkpoint (train/init_from.py): '' trains from scratch; otherwise a workdir
    # of ours or the output of `python -m tokenlearner_jax.convert`, a vit_jax / big_vision .npz, or a
    # timm .safetensors. Patterns are regexes on parameter names such as 'head/kernel'.
    config.init_from = ml_collections.ConfigDict(dict(
        path="",
        include=(),  # non-empty: load only the parameters matching one; the rest start fresh
        exclude=(),  # parameters that start fresh; matching source parameters are ignored
        fresh_if_missing=(r"(^|/)token_learner", r"(^|/)token_fuser"),  # may be absent from the source
        reinit_if_shape_differs=(r"^head/",),  # re-initialised when the shapes differ (number of classes)
    ))
    # Few-shot linear evaluation of the frozen pre-logit features (evaluate/fewshot_evaluator.py): every
    # `every_steps` steps and at the end of training (0: only with main.py --mode=fewshot). Datasets not
    # prepared here are reported and skipped.
    config.fewshot = ml_collections.ConfigDict(dict(
        every_steps=0,
        datasets=("digits", "caltech101", "cifar100", "dtd", "oxford_iiit_pet", "imagenet2012"),
        shots=fewshot.SHOTS,
        seeds=3,
        l2_regs=fewshot.L2_REGS,  # the regulariser grid; one is chosen by leave-one-out on the shots
    ))
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
    check(config.loss in ("softmax_xent", "sigmoid_xent"), "loss", config.loss, "'softmax_xent' or 'sigmoid_xent'")
    check(config.optimizer.name in ("adamw", "adam", "sgd"), "optimizer.name", config.optimizer.name,
          "'adamw', 'adam' or 'sgd'")
    check(config.optimizer.decay in ("cosine", "linear", "constant"), "optimizer.decay", config.optimizer.decay,
          "'cosine', 'linear' or 'constant'")
    for field in ("mixup_alpha", "cutmix_alpha"):
        check(config.mixup[field] >= 0, f"mixup.{field}", config.mixup[field], ">= 0 (0: off)")
    for field in ("switch_prob", "prob"):
        check(0 <= config.mixup[field] <= 1, f"mixup.{field}", config.mixup[field], "in [0, 1]")
    check(config.optimizer.learning_rate >= 0, "optimizer.learning_rate", config.optimizer.learning_rate, ">= 0")
    check(config.optimizer.warmup_steps >= 0, "optimizer.warmup_steps", config.optimizer.warmup_steps, ">= 0")
    check(config.dataset.image_size > 0, "dataset.image_size", config.dataset.image_size, "> 0")
    for field in ("log_every_steps", "checkpoint_every_steps", "keep_checkpoints"):
        check(config[field] > 0, field, config[field], "> 0")
    check(config.eval_every_steps >= 0, "eval_every_steps", config.eval_every_steps, ">= 0 (0: only at the end)")
    check(config.fewshot.every_steps >= 0, "fewshot.every_steps", config.fewshot.every_steps,
          ">= 0 (0: only with --mode=fewshot)")
    model = config.model
    for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
        if field in model:
            check(0 <= model[field] < 1, f"model.{field}", model[field], "in [0, 1)")
    if "dtype" in model:
        check(model.dtype in ("float32", "bfloat16", "float16"), "model.dtype", model.dtype,
              "'float32', 'bfloat16' or 'float16'")
    if model.name == "vit":
        _validate_vit(config, check)


def validate_for_mesh(config, data_parallel: int, process_count: int) -> None:
    """Batch sizes must split evenly over the data-parallel devices and the processes."""
    micro_batch = config.batch_size // config.grad_accum_steps
    for field, value in (("batch_size", config.batch_size), ("eval_batch_size", config.eval_batch_size)):
        if value % process_count:
            raise ValueError(f"config.{field}={value}: expected a multiple of the {process_count} processes")
    if micro_batch % data_parallel:
        raise ValueError(f"config.batch_size={config.batch_size}: batch_size / grad_accum_steps = {micro_batch} "
                         f"must be a multiple of the {data_parallel} data-parallel devices (mesh data x fsdp)")
    if config.eval_batch_size % data_parallel:
        raise ValueError(f"config.eval_batch_size={config.eval_batch_size}: expected a multiple of the "
                         f"{data_parallel} data-parallel devices (mesh data x fsdp)")


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


def _imagenet_base(*, train_split: str, normalize: str) -> ml_collections.ConfigDict:
    """`base_config()` reading ImageNet-1k at 224 (TFDS imagenet2012, inception crop + flip, 16 workers)."""
    config = base_config()
    config.dataset.name = "imagenet2012"
    config.dataset.image_size = 224
    config.dataset.train_split = train_split
    config.dataset.eval_split = "validation"
    config.dataset.augment = "inception_crop"
    config.dataset.normalize = normalize
    config.dataset.num_workers = 16
    return config


def imagenet_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 with the TokenLearner paper's recipe (../shared/reference/models.md): AdamW,
    weight decay 0.3, global-norm clip 1.0, batch 4096, 90 epochs, lr 5e-3 with 10k warmup steps and
    linear decay, sigmoid cross-entropy with the head bias initialised to -10, GAP classifier."""
    config = _imagenet_base(train_split="train[:99%]", normalize="minus_one_one")
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


IMAGENET_TRAIN_SIZE = 1_281_167


def poolformer_imagenet_config(variant: str, *, batch_size: int = 1024) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 with PoolFormer's official recipe (arXiv 2111.11418; its repository's train
    script): AdamW, lr = batch / 1024 x 1e-3 with cosine decay to 1e-5, 5 warmup epochs, weight decay
    0.05 (not on biases, norms and layer scales), no gradient clipping, 300 epochs, the variant's drop
    path, label smoothing 0.1, mixup 0.8 / cutmix 1.0 (switch 0.5), RandAugment m9 (std 0.5, 2 ops),
    random-resized crop + flip, eval crop 0.9 (S) / 0.95 (M) of the resized image, ImageNet mean/std."""
    config = _imagenet_base(train_split="train", normalize="imagenet")
    config.dataset.randaugment_num_ops = 2
    config.dataset.randaugment_magnitude = 9.0
    config.dataset.randaugment_magnitude_std = 0.5
    config.dataset.eval_crop_fraction = 0.9 if variant.startswith("S") else 0.95
    config.model = poolformer_model(variant, num_classes=1000)
    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.mixup_alpha = 0.8
    config.mixup.cutmix_alpha = 1.0
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.num_epochs = 300.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 1e-3 * batch_size / 1024
    config.optimizer.end_learning_rate = 1e-5
    config.optimizer.warmup_steps = round(5 * IMAGENET_TRAIN_SIZE / batch_size)
    config.optimizer.decay = "cosine"
    config.optimizer.weight_decay = 0.05
    config.optimizer.weight_decay_exclude = DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/layer_scale_\d$",)
    config.optimizer.grad_clip_norm = 0.0
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config


def digits_vit_config(*, depth: int, location: float, num_train_steps: int,
                      warmup_steps: int) -> ml_collections.ConfigDict:
    """The quickstart recipe on the bundled digits: 32x32 images in 4x4 patches (64 tokens), a width-64
    ViT with 4 heads and TokenLearner v1.1 learning 8 tokens at `location`, AdamW lr 2e-3 with weight
    decay 0.05, batch 128, label smoothing 0.1, random shifts of up to 3 pixels."""
    config = base_config()
    config.dataset.name = "digits"
    config.dataset.image_size = 32
    config.dataset.augment = "shift"
    config.dataset.shift_pixels = 3

    config.model = vit_model("S/4", num_classes=10, classifier="gap", token_learner=True, location=location,
                             num_tokens=8)
    config.model.width = 64
    config.model.depth = depth
    config.model.num_heads = 4
    config.model.mlp_dim = 256

    config.batch_size = 128
    config.eval_batch_size = 360
    config.num_train_steps = num_train_steps
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = warmup_steps
    config.optimizer.weight_decay = 0.05
    config.label_smoothing = 0.1
    return config

