"""ViT-B/16 with TokenLearner + TokenFuser from layer 6 on (8 tokens), ImageNet-1k at 224.

  python main.py --config=configs/vit_b16_tl_fuser.py --workdir=runs/vit_b16_tl_fuser

Every layer from 6 on runs TokenLearner -> transformer block on 8 tokens -> TokenFuser -> + residual,
so all 196 positions are kept; the fuser's token-mixing Dense starts at zero, so each fused layer
starts as the identity on the patch tokens. The recipe of configs/vit_b16.py. Needs imagenet2012 in
array_record format (docs/data.md).
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
        token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8, use_fuser=True))

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
