"""ViT-B/16 on ImageNet-1k at 224, without TokenLearner: the baseline of the TokenLearner configs.

  python main.py --config=configs/vit_b16.py --workdir=runs/vit_b16

The TokenLearner paper's recipe: AdamW, weight decay 0.3, global-norm clip 1.0, batch 4096, 90 epochs,
lr 5e-3 with 10k warmup steps and linear decay, sigmoid cross-entropy with the head bias initialised
to -10, GAP classifier. 86.57M parameters, 17.6 GMACs per image (experiments/results/benchmark_tokenlearner.md).
Needs imagenet2012 prepared with TFDS in array_record format (docs/data.md). Smoke test without ImageNet:
  python main.py --config=configs/vit_b16.py --workdir=/tmp/b16 --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="imagenet2012", image_size=224, train_split="train[:99%]",
                                     eval_split="validation", augment="inception_crop", normalize="minus_one_one",
                                     num_workers=16)
    config.model = models.config("vit", variant="B/16", num_classes=1000, classifier="gap", head_bias_init=-10.0)

    config.loss = "sigmoid_xent"
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=5e-3, warmup_steps=10_000, decay="linear",
                                         weight_decay=0.3, grad_clip_norm=1.0)
    config.batch_size = 4096
    config.num_epochs = 90.0

    config.eval_batch_size = 4096
    config.log_every_steps = 100
    config.eval_every_steps = 5000
    config.checkpoint_every_steps = 2000
    return config
