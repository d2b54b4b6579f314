"""MaxViT-L on ImageNet-1k at 224 with the official recipe (its hp/vision_i1k.py).

  python main.py --config=configs/maxvit_large.py --workdir=runs/maxvit_large
  python main.py --config=configs/maxvit_large.py:1024 ...   (another global batch; lr and warmup follow it)

Recipe: AdamW, lr 3e-3 at batch 4096 (linear in the batch) with cosine decay to 1e-5 after 10k
warmup steps at 4096 (the same number of examples at another batch), weight decay 0.05 (not on
biases, norm scales and relative bias tables), clip 1.0, 300 epochs, EMA of the weights (0.9999),
the variant's drop path, label smoothing 0.1, mixup 0.8 (no cutmix), RandAugment 2 ops at
magnitude 15 (past the nominal maximum 10, which data/augment.py extrapolates as TF's RandAugment
does), eval crop 0.95 (timm's maxvit_*_tf_224), ImageNet mean/std.

211.79M parameters (experiments/results/maxvit_macs.md has the MACs). Expected: about 85.17% top-1 on the
validation split after 300 epochs at batch 4096 (the paper's figure; not reproduced here). Needs
imagenet2012 in array_record format (docs/data.md). timm's published weights (maxvit_large_tf_224.in1k,
or _384 / _512 with --config.dataset.image_size=384 / 512: window and grid follow the resolution):
  python -m tokenlearner_jax.convert --source=model.safetensors --config=configs/maxvit_large.py --output=DIR
Smoke test on CPU without ImageNet:
  python main.py --config=configs/maxvit_large.py --workdir=/tmp/mv --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_workers=0
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    batch = int(arg) if arg else 4096
    config = recipes.base("classification")
    config.dataset = recipes.dataset(
        name="imagenet2012", image_size=224, train_split="train", eval_split="validation",
        augment="inception_crop", randaugment_num_ops=2, randaugment_magnitude=15.0, randaugment_magnitude_std=0.0,
        eval_crop_fraction=0.95, normalize="imagenet", num_workers=16)
    config.model = models.config("maxvit", variant="L", num_classes=1000)  # the variant's drop path

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=0.0)
    config.ema.decay = 0.9999
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=3e-3 * batch / 4096, end_learning_rate=1e-5,
        warmup_steps=round(10_000 * 4096 / batch), decay="cosine", weight_decay=0.05,
        weight_decay_exclude=recipes.DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/relative_position_bias/table$",),
        grad_clip_norm=1.0)
    config.batch_size = batch
    config.num_epochs = 300.0

    config.eval_batch_size = min(batch, 1024)
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
