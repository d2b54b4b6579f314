"""A small MaxViT on scikit-learn's bundled digits (no download), a few minutes on 2 CPU cores.

  python main.py --config=configs/maxvit_digits.py --workdir=runs/maxvit_digits

Digits are upscaled from 8x8 to 32x32; the stem gives a 16x16 map, and three stages of MaxViT blocks
(widths 32, 64, 128; depths 1, 2, 1; head size 32) see 8x8, 4x4 and 2x2 maps, with 2x2 windows and a
2x2 grid (the last stage's map, as at 224 where it is 7x7). BatchNorm statistics are updated in train
mode (momentum 0.9 for so short a run) and used frozen in evaluation. TokenLearner by override, e.g.
  --config.model.token_learner.enabled=True --config.model.token_learner.location=1
Expected: 99.17% top-1 on the 360-image digits test split after 500 steps of batch 64 (0.89M parameters,
12.0 MMACs per image), 4.4 min for the whole command on 2 CPU cores with a load average of 3.4 (20 min at
a load of 8-12); experiments/maxvit_digits.py, experiments/results/maxvit_digits.md.
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="digits", image_size=32, augment="shift", shift_pixels=3)
    config.model = models.config(
        "maxvit", variant="T", num_classes=10, stem_widths=(16, 32), depths=(1, 2, 1), dims=(32, 64, 128),
        drop_path_rate=0.05,
        # Running statistics forget their initial values (mean 0, var 1) within a few hundred steps only at a
        # lower momentum: at 0.99, 0.99^500 = 0.7% of the initial variance is still in them after 500 steps.
        bn_momentum=0.9,
        token_learner=dict(enabled=False, version="v1.1", location=1, num_tokens=8, gelu="erf"))

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(
        name="adamw", learning_rate=2e-3, warmup_steps=50, decay="cosine", weight_decay=0.05,
        weight_decay_exclude=recipes.DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/relative_position_bias/table$",),
        grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_train_steps = 500

    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    return config
