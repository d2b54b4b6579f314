"""A small PoolFormer on scikit-learn's bundled digits (no download), a few minutes on 2 CPU cores.

  python main.py --config=configs/poolformer_quick.py --workdir=runs/poolformer_quick

Digits are upscaled from 8x8 to 64x64; the 7x7/4 stem gives a 16x16 grid, and three stages of two
blocks (widths 32, 64, 128) see 16x16, 8x8 and 4x4 grids; about 16M MACs per image. The token mixer
and TokenLearner are config fields, e.g.
  --config.model.mixers="('attention',)"                  attention in every stage
  --config.model.mixers="('pooling', 'pooling', 'attention')"
  --config.model.token_learner.enabled=True               8 learned tokens in the last stage
Expected: about 97.5% top-1 on the 360-image digits test split after 500 steps of batch 64, about
2.5 min on 2 free CPU cores (experiments/results/poolformer_mixers_digits.md has every mixer's figure).
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="digits", image_size=64, augment="shift", shift_pixels=6)
    config.model = models.config(
        "poolformer", variant="S12", num_classes=10, depths=(2, 2, 2), dims=(32, 64, 128), layer_scale_init=1e-5,
        drop_path_rate=0.05,
        token_learner=dict(enabled=False, version="v1.1", location=-1, num_tokens=8, gelu="erf"))

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=2e-3, warmup_steps=50, decay="cosine", weight_decay=0.05,
        weight_decay_exclude=recipes.DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/layer_scale_\d$",), grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_train_steps = 500

    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    return config
