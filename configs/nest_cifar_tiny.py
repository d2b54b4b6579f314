"""NesT-T for CIFAR (32x32, patch 1, four levels of three layers, multi-query attention) with NesT's
recipe.

  python main.py --config=configs/nest_cifar_tiny.py --workdir=runs/nest_cifar_tiny
  python main.py --config=configs/nest_cifar_tiny.py:cifar100 ...   (CIFAR-100)

6.01M parameters with a 10-class head (experiments/results/nest_macs.md). Recipe: AdamW, lr 2.5e-4 x
batch / 256 at batch 1024, cosine, 5 warmup epochs, 300 epochs, weight decay 0.05 on everything but the
position embeddings, RandAugment 2 ops m9, random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing
0.1, drop path 0.1, random shifts of up to 4 pixels.
Expected: about 96.04% top-1 on CIFAR-10 from scratch (the paper's figure; not reproduced here). Needs
cifar10 prepared with TFDS in array_record format (docs/data.md).
"""

from tokenlearner_jax import models, recipes

CLASSES = {"cifar10": 10, "cifar100": 100}


def get_config(arg=None):
    name = arg or "cifar10"
    if name not in CLASSES:
        raise ValueError(f"configs/nest_cifar_tiny.py:{arg}: expected 'cifar10' or 'cifar100'")
    batch = 1024
    config = recipes.base("classification")
    config.dataset = recipes.dataset(
        name=name, image_size=32, train_split="train", eval_split="test", augment="shift", shift_pixels=4,
        randaugment_num_ops=2, randaugment_magnitude=9.0, randaugment_magnitude_std=0.5, random_erasing_prob=0.25,
        eval_crop_fraction=1.0, normalize="imagenet", num_workers=8)
    config.model = models.config("nest", variant="cifar_T", num_classes=CLASSES[name])  # the variant's drop path

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=2.5e-4 * batch / 256, warmup_steps=round(5 * 50_000 / batch), decay="cosine",
        weight_decay=0.05, weight_decay_exclude=(r"pos_embedding$",), grad_clip_norm=0.0)
    config.batch_size = batch
    config.num_epochs = 300.0

    config.eval_batch_size = batch
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
