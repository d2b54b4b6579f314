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


def vivit_model(variant: str = "B/16", *, tubelet_frames: int = 2, encoder: str = "joint", temporal_depth: int = 4,
                num_classes: int = 400, classifier: str = "token", **token_learner) -> ml_collections.ConfigDict:
    """`config.model` for a ViViT (models/vivit.py): `vit_model`'s fields (same keyword arguments for
    TokenLearner, which runs per temporal slice) plus the tubelet's frames, the encoder ('joint' or
    'factorised') and the factorised encoder's temporal depth."""
    config = vit_model(variant, num_classes=num_classes, classifier=classifier, **token_learner)
    config.name = "vivit"
    config.tubelet_frames = tubelet_frames
    config.encoder = encoder
    config.temporal_depth = temporal_depth
    return config


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


def nest_model(variant: str = "T", *, num_classes: int = 1000, token_learner: bool = False, stage: int = -1,
               num_tokens: int = 8, version: str = "v1.1", use_fuser: bool = False) -> ml_collections.ConfigDict:
    """`config.model` for NesT (models/nest.py), with the variant's drop path.

    Variants 'T', 'S', 'B' (224) and 'cifar_T', 'cifar_S', 'cifar_B' (32x32, multi-query attention);
    non-empty dims / num_heads / depths, a positive patch_size and num_kv_heads >= 0 override the variant.
    token_learner.stage is a 0-based level (-1: the last level)."""
    from tokenlearner_jax.models import nest  # imported late, as in _validate_vit

    dims, _, depths, _, drop_path, _ = nest.VARIANTS[variant]
    return ml_collections.ConfigDict(dict(
        name="nest",
        variant=variant,
        num_classes=num_classes,
        dims=(), num_heads=(), depths=(),
        patch_size=-1,
        num_kv_heads=-1,  # -1: the variant's (0: one key/value head per query head, 1: multi-query)
        mlp_ratio=4,
        drop_path_rate=drop_path,
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        pool_padding="same",  # 'same': the official code and timm's nest_*_jx; 'symmetric': timm's nest_*
        dtype="float32",
        token_learner=dict(enabled=token_learner, stage=stage if stage >= 0 else len(depths) - 1,
                           num_tokens=num_tokens, version=version, use_fuser=use_fuser, bottleneck_dim=64),
    ))


def maxvit_model(variant: str = "T", *, num_classes: int = 1000, token_learner: bool = False, stage: int = 3,
                 num_tokens: int = 8, version: str = "v1.1", use_fuser: bool = False) -> ml_collections.ConfigDict:
    """`config.model` for MaxViT (models/maxvit.py), with the variant's drop path (1 - survival).

    Variants 'T', 'S', 'B', 'L'; non-empty stem_widths / depths / dims override them. window_size and
    grid_size 0 follow the input: the last stage's map height (input / 32 with four stages: 7 at 224,
    12 at 384, 16 at 512). bn_momentum is the
    weight of the old running statistics (TF / Flax convention; torch's momentum is 1 - it).
    token_learner.stage is 0-based (3: the fourth stage)."""
    from tokenlearner_jax.models import maxvit  # imported late, as in _validate_vit

    return ml_collections.ConfigDict(dict(
        name="maxvit",
        variant=variant,
        num_classes=num_classes,
        stem_widths=(), depths=(), dims=(),
        window_size=0, grid_size=0,
        head_dim=32,
        mlp_ratio=4,
        expand_ratio=4,
        se_ratio=0.25,
        drop_path_rate=maxvit.VARIANTS[variant][3],
        dropout_rate=0.0,
        attention_dropout_rate=0.0,
        bn_momentum=0.99,
        bn_epsilon=1e-3,
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
    # Mixup / CutMix on device in the train step (tasks/mixup.py); off while both alphas are 0.
    config.mixup = ml_collections.ConfigDict(dict(mixup_alpha=0.0, cutmix_alpha=0.0, switch_prob=0.5, prob=1.0))
    # Exponential moving average of the parameters, kept in the train state (checkpointed) and evaluated
    # beside them as eval_ema/*; decay 0 turns it off. dynamic_decay: min(decay, (1 + step) / (10 + step)).
    config.ema = ml_collections.ConfigDict(dict(decay=0.0, dynamic_decay=True))
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

    # Start a fresh run from a checkpoint (weights/init_from.py): '' trains from scratch; otherwise a workdir
    # of ours or the output of `python -m tokenlearner_jax.convert`, a vit_jax / big_vision .npz, or a
    # timm .safetensors. Patterns are regexes on parameter names such as 'head/kernel'.
    config.init_from = ml_collections.ConfigDict(dict(
        path="",
        include=(),  # non-empty: load only the parameters matching one; the rest start fresh
        exclude=(),  # parameters that start fresh; matching source parameters are ignored
        fresh_if_missing=(r"(^|/)token_learner", r"(^|/)token_fuser"),  # may be absent from the source
        reinit_if_shape_differs=(r"^head/",),  # re-initialised when the shapes differ (number of classes)
        # A 2D patch kernel loaded into a 3D (tubelet) one (weights/inflate.py): 'central_frame' (the 2D kernel
        # at the middle frame, zeros elsewhere) or 'filter' (repeated over the frames, divided by their number).
        inflate="central_frame",
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
    check(0 <= config.ema.decay < 1, "ema.decay", config.ema.decay, "in [0, 1) (0: off)")
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
    if model.name in ("vit", "vivit"):
        _validate_vit(config, check)
    if model.name == "vivit":
        check(config.dataset.num_frames > 0 and config.dataset.num_frames % model.tubelet_frames == 0,
              "dataset.num_frames", config.dataset.num_frames,
              f"a positive multiple of config.model.tubelet_frames={model.tubelet_frames}")
        check(model.encoder in ("joint", "factorised"), "model.encoder", model.encoder, "'joint' or 'factorised'")
        check(config.init_from.inflate in ("central_frame", "filter"), "init_from.inflate",
              config.init_from.inflate, "'central_frame' or 'filter'")
    if model.name == "nest":
        _validate_nest(config, check)
    if model.name == "maxvit":
        _validate_maxvit(config)


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


def _validate_nest(config, check):
    from tokenlearner_jax.models import nest

    arch = nest.resolve_architecture(config.model)
    check(config.model.pool_padding in nest.POOL_PADDINGS, "model.pool_padding", config.model.pool_padding,
          f"one of {nest.POOL_PADDINGS}")
    levels, size = len(arch["depths"]), config.dataset.image_size
    multiple = arch["patch_size"] << (levels - 1)
    check(size % multiple == 0, "dataset.image_size", size,
          f"a multiple of patch_size x 2^(levels - 1) = {multiple} ({levels} levels of square blocks)")
    nest.token_learner_spec(config.model, levels)


def _validate_maxvit(config):
    from tokenlearner_jax.models import maxvit

    model = maxvit.build_maxvit(config.model)  # checks the architecture and token_learner fields
    size = config.dataset.image_size
    try:
        model.partition_sizes(size, size)
    except ValueError as e:
        raise ValueError(f"config.dataset.image_size={size}: {e}") from e


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


def _nest_recipe(config, model, *, batch_size: int, train_size: int, warmup_epochs: int):
    """NesT's official recipe (google-research/nested-transformer configs): AdamW, lr 2.5e-4 x batch / 256,
    cosine to 0, weight decay 0.05 on everything but the position embeddings, no clipping, 300 epochs,
    RandAugment 2 ops m9 (std 0.5), random erasing 0.25, mixup 0.8 / cutmix 1.0 (switch 0.5), label
    smoothing 0.1."""
    config.dataset.randaugment_num_ops = 2
    config.dataset.randaugment_magnitude = 9.0
    config.dataset.randaugment_magnitude_std = 0.5
    config.dataset.random_erasing_prob = 0.25
    config.model = model
    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.mixup_alpha = 0.8
    config.mixup.cutmix_alpha = 1.0
    config.batch_size = batch_size
    config.eval_batch_size = batch_size
    config.num_epochs = 300.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 2.5e-4 * batch_size / 256
    config.optimizer.warmup_steps = round(warmup_epochs * train_size / batch_size)
    config.optimizer.decay = "cosine"
    config.optimizer.weight_decay = 0.05
    config.optimizer.weight_decay_exclude = (r"pos_embedding$",)
    config.optimizer.grad_clip_norm = 0.0
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config


def nest_imagenet_config(variant: str, *, batch_size: int = 1024) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 with NesT's recipe (`_nest_recipe`, 20 warmup epochs), inception crop + flip,
    eval resize to 256 and central crop 224, ImageNet mean/std."""
    config = _imagenet_base(train_split="train", normalize="imagenet")
    return _nest_recipe(config, nest_model(variant, num_classes=1000), batch_size=batch_size,
                        train_size=IMAGENET_TRAIN_SIZE, warmup_epochs=20)


def nest_cifar_config(variant: str, *, dataset: str = "cifar10", batch_size: int = 1024) -> ml_collections.ConfigDict:
    """CIFAR-10 / 100 (TFDS) at 32x32 with NesT's recipe (`_nest_recipe`, 5 warmup epochs) and a CIFAR
    NesT ('cifar_T', 'cifar_S', 'cifar_B'); random shifts of up to 4 pixels (zero fill)."""
    config = base_config()
    config.dataset.name = dataset
    config.dataset.image_size = 32
    config.dataset.train_split = "train"
    config.dataset.eval_split = "test"
    config.dataset.augment = "shift"
    config.dataset.shift_pixels = 4
    config.dataset.eval_crop_fraction = 1.0
    config.dataset.normalize = "imagenet"
    config.dataset.num_workers = 8
    num_classes = {"cifar10": 10, "cifar100": 100}[dataset]
    return _nest_recipe(config, nest_model(variant, num_classes=num_classes), batch_size=batch_size,
                        train_size=50_000, warmup_epochs=5)


def maxvit_imagenet_config(variant: str, *, batch_size: int = 4096) -> ml_collections.ConfigDict:
    """ImageNet-1k at 224 with MaxViT's official recipe (its hp/vision_i1k.py): AdamW, lr 3e-3 at batch
    4096 (linear in the batch) with cosine decay to 1e-5 after 10k warmup steps (at 4096; the same number
    of examples at another batch), weight decay 0.05 (not on biases, norm scales and relative bias
    tables), clip 1.0, 300 epochs, EMA of the weights (0.9999), the variant's drop path, label smoothing
    0.1, mixup 0.8 (no cutmix), RandAugment 2 ops at magnitude 15 (past the nominal maximum 10, which
    data/augment.py extrapolates as TF's RandAugment does); eval crop 0.95 (timm's maxvit_*_tf_224)."""
    config = _imagenet_base(train_split="train", normalize="imagenet")
    config.dataset.randaugment_num_ops = 2
    config.dataset.randaugment_magnitude = 15.0
    config.dataset.randaugment_magnitude_std = 0.0
    config.dataset.eval_crop_fraction = 0.95
    config.model = maxvit_model(variant, num_classes=1000)
    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.mixup_alpha = 0.8
    config.ema.decay = 0.9999
    config.batch_size = batch_size
    config.eval_batch_size = min(batch_size, 1024)
    config.num_epochs = 300.0
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3 * batch_size / 4096
    config.optimizer.end_learning_rate = 1e-5
    config.optimizer.warmup_steps = round(10_000 * 4096 / batch_size)
    config.optimizer.decay = "cosine"
    config.optimizer.weight_decay = 0.05
    config.optimizer.weight_decay_exclude = DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/relative_position_bias/table$",)
    config.optimizer.grad_clip_norm = 1.0
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



# ViViT's released Kinetics-400 recipe trains 30 epochs with 2.5 warmup epochs; Kinetics sizes change as
# videos leave YouTube, so the warmup is fixed in steps: 2.5 epochs of 214,834 clips at batch 64.
KINETICS_WARMUP_STEPS = 8_400


def kinetics_vivit_config(num_classes: int) -> ml_collections.ConfigDict:
    """ViViT-B/16x2 (joint space-time encoder, class token) with TokenLearner v1.1 learning 8 tokens per
    temporal slice before layer 6 of 12, on Kinetics-`num_classes` video files (data/video.py layout under
    `dataset.data_dir`), with ViViT's recipe (arXiv 2103.15691 and its released Kinetics-400 config): 32
    frames at stride 2, random-resized 224 crops + flips, evaluation on 4 clips x 3 crops of 224 from a
    256 shorter side (logits averaged), SGD with momentum 0.9, lr 0.1, 2.5 warmup epochs then cosine, 30
    epochs, batch 64, global-norm clip 1.0, no weight decay, no label smoothing. Start from an ImageNet ViT-B/16
    with `init_from.path` (the patch kernel inflated by `init_from.inflate`, 'central_frame')."""
    config = base_config()
    config.dataset.name = f"kinetics{num_classes}"
    config.dataset.num_classes = num_classes
    config.dataset.image_size = 224
    config.dataset.num_frames = 32
    config.dataset.frame_stride = 2
    config.dataset.augment = "inception_crop"
    config.dataset.eval_crop_fraction = 224 / 256
    config.dataset.eval_temporal_views = 4
    config.dataset.eval_spatial_views = 3
    config.dataset.normalize = "minus_one_one"
    config.dataset.train_split = "train"
    config.dataset.eval_split = "validation"
    config.dataset.num_workers = 16
    config.model = vivit_model("B/16", tubelet_frames=2, encoder="joint", num_classes=num_classes,
                               classifier="token", token_learner=True, location=0.5, num_tokens=8)
    config.init_from.fresh_if_missing += (r"^temporal_",)
    config.batch_size = 64
    config.eval_batch_size = 8  # x 12 views of 32 x 224 x 224 frames
    config.num_epochs = 30.0
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.1
    config.optimizer.warmup_steps = KINETICS_WARMUP_STEPS
    config.optimizer.decay = "cosine"
    config.optimizer.weight_decay = 0.0
    config.optimizer.grad_clip_norm = 1.0
    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 2000
    return config


def moving_digits_vivit_config(*, token_learner: bool, num_train_steps: int) -> ml_collections.ConfigDict:
    """A small ViViT on the bundled moving digits (data/video_digits.py, 40 classes: digit x direction):
    8 frames at stride 2 of 32x32 in 2x4x4 tubelets (4 slices of 64 tokens), joint encoder of 4 layers of
    width 64, 4 heads, GAP; with `token_learner`, TokenLearner v1.1 learns 8 tokens per slice before layer
    1 (32 tokens from then on). AdamW lr 2e-3, weight decay 0.05, batch 32, 100 warmup steps, cosine,
    label smoothing 0.1; no spatial augmentation (a flip would change the direction of motion)."""
    config = base_config()
    config.dataset.name = "moving_digits"
    config.dataset.image_size = 32
    config.dataset.num_frames = 8
    config.dataset.frame_stride = 2
    config.dataset.augment = "none"
    config.dataset.num_workers = 2
    config.model = vivit_model("S/4", tubelet_frames=2, encoder="joint", num_classes=40, classifier="gap",
                               token_learner=token_learner, location=1, num_tokens=8)
    config.model.width = 64
    config.model.depth = 4
    config.model.num_heads = 4
    config.model.mlp_dim = 128
    config.init_from.fresh_if_missing += (r"^temporal_",)
    config.batch_size = 32
    config.eval_batch_size = 360
    config.num_train_steps = num_train_steps
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 100
    config.optimizer.weight_decay = 0.05
    config.label_smoothing = 0.1
    return config
