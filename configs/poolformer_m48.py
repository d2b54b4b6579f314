"""PoolFormer-M48 on ImageNet-1k at 224 with the official recipe.

  python main.py --config=configs/poolformer_m48.py --workdir=runs/poolformer_m48
  python main.py --config=configs/poolformer_m48.py:512 ...   (another global batch; lr and warmup follow it)

Recipe (the official code's train script, arXiv 2111.11418): AdamW, lr = batch / 1024 x 1e-3 with cosine
decay to 1e-5, 5 warmup epochs, weight decay 0.05 (not on biases, norms and layer scales), no
gradient clipping, 300 epochs, the variant's drop path (0.4) and layer scale (1e-6), label
smoothing 0.1, mixup 0.8 / cutmix 1.0 (switch 0.5), RandAugment m9 (std 0.5, 2 ops), random-resized
crop + flip, eval crop 0.95 of the resized image, ImageNet mean/std.

73.5M parameters, 11.53 GMACs per image (dot / conv MACs; experiments/results/poolformer_macs.md).
Expected: about 82.5% top-1 on the validation split after 300 epochs at batch 1024 with eval crop
0.95 (the paper's and timm's figure; not reproduced here). Needs imagenet2012 in array_record
format (docs/data.md).
timm's published weights (poolformer_m48.sail_in1k) need timm's head ordering:
  python -m tokenlearner_jax.convert --source=poolformer_m48.safetensors --config=configs/poolformer_m48.py \
    --config.model.head_norm=pooled_layer_norm
Smoke test on CPU without ImageNet:
  python main.py --config=configs/poolformer_m48.py --workdir=/tmp/pf --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_workers=0
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    batch = int(arg) if arg else 1024
    config = recipes.base("classification")
    config.dataset = recipes.dataset(
        name="imagenet2012", image_size=224, train_split="train", eval_split="validation",
        augment="inception_crop", randaugment_num_ops=2, randaugment_magnitude=9.0, randaugment_magnitude_std=0.5,
        eval_crop_fraction=0.95, normalize="imagenet", num_workers=16)
    config.model = models.config("poolformer", variant="M48", num_classes=1000)  # the variant's drop path, layer scale

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=1e-3 * batch / 1024, end_learning_rate=1e-5,
        warmup_steps=round(5 * recipes.IMAGENET_TRAIN_SIZE / batch), decay="cosine", weight_decay=0.05,
        weight_decay_exclude=recipes.DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/layer_scale_\d$",), grad_clip_norm=0.0)
    config.batch_size = batch
    config.num_epochs = 300.0

    config.eval_batch_size = batch
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
