"""NesT-B on ImageNet-1k at 224 with the official recipe.

  python main.py --config=configs/nest_base.py --workdir=runs/nest_base
  python main.py --config=configs/nest_base.py:512 ...   (another global batch; lr and warmup follow it)

67.72M parameters, 17.93 GMACs (dot + conv) per image (experiments/results/nest_macs.md). Recipe: AdamW, lr 2.5e-4 x batch / 256, cosine,
20 warmup epochs, 300 epochs, weight decay 0.05 on everything but the position embeddings, RandAugment
2 ops m9, random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1.
Expected: about 83.8% top-1 on the validation split after 300 epochs (the paper's figure; not reproduced
here). Needs imagenet2012 in array_record format (docs/data.md).
timm's weights (nest_base_jx.goog_in1k, ported from the official code):
  python -m tokenlearner_jax.convert --source=nest_base_jx.safetensors --config=configs/nest_base.py --output=DIR
Smoke test on CPU without ImageNet:
  python main.py --config=configs/nest_base.py --workdir=/tmp/nest --config.dataset.name=synthetic \
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
        random_erasing_prob=0.25, normalize="imagenet", num_workers=16)
    config.model = models.config("nest", variant="B", num_classes=1000)  # the variant's drop path

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.mixup.update(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5)
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=2.5e-4 * batch / 256, warmup_steps=round(20 * recipes.IMAGENET_TRAIN_SIZE / batch),
        decay="cosine", weight_decay=0.05, weight_decay_exclude=(r"pos_embedding$",), grad_clip_norm=0.0)
    config.batch_size = batch
    config.num_epochs = 300.0

    config.eval_batch_size = batch
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
