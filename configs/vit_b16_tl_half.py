"""ViT-B/16 with TokenLearner v1.1 learning 8 tokens before layer 6 of 12 ("at 1/2"), ImageNet-1k at 224.

  python main.py --config=configs/vit_b16_tl_half.py --workdir=runs/vit_b16_tl_half

Layers 6-11 see 8 tokens instead of 196: about 9.3 GMACs per image against 17.6 for ViT-B/16
(experiments/results/benchmark_tokenlearner.md). The recipe of configs/vit_b16.py (the TokenLearner
paper's): AdamW, weight decay 0.3, clip 1.0, batch 4096, 90 epochs, lr 5e-3, 10k warmup steps, linear
decay, sigmoid loss with head bias -10. Needs imagenet2012 in array_record format (docs/data.md).
Smoke test on CPU without ImageNet:
  python main.py --config=configs/vit_b16_tl_half.py --workdir=/tmp/tl --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="imagenet2012", image_size=224, train_split="train[:99%]",
                                     eval_split="validation", augment="inception_crop", normalize="minus_one_one",
                                     num_workers=16)
    config.model = models.config(
        "vit", variant="B/16", num_classes=1000, classifier="gap", head_bias_init=-10.0,
        token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8))

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
