"""A small PoolFormer on scikit-learn's bundled digits (no download), a few minutes on 2 CPU cores.

  python main.py --config=configs/poolformer_quick.py --workdir=runs/poolformer_quick

Digits are upscaled from 8x8 to 64x64; the 7x7/4 stem gives a 16x16 grid, and three stages of two
blocks (widths 32, 64, 128) see 16x16, 8x8 and 4x4 grids; about 16M MACs per image. The token mixer
and TokenLearner are config fields, e.g.
  --config.model.mixers="('attention',)"                  attention in every stage
  --config.model.mixers="('pooling', 'pooling', 'attention')"
  --config.model.token_learner.enabled=True               8 learned tokens before the last stage
Expected: about 97.5% top-1 on the 360-image digits test split after 500 steps of batch 64, about
2.5 min on 2 free CPU cores (experiments/results/poolformer_mixers_digits.md has every mixer's figure).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    config = config_lib.base_config()
    config.dataset.name = "digits"
    config.dataset.image_size = 64
    config.dataset.augment = "shift"
    config.dataset.shift_pixels = 6

    config.model = config_lib.poolformer_model("S12", num_classes=10, stage=2, num_tokens=8)
    config.model.depths = (2, 2, 2)
    config.model.dims = (32, 64, 128)
    config.model.layer_scale_init = 1e-5
    config.model.drop_path_rate = 0.05

    config.batch_size = 64
    config.eval_batch_size = 360
    config.num_train_steps = 500
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 50
    config.optimizer.weight_decay = 0.05
    config.optimizer.weight_decay_exclude = config_lib.DEFAULT_WEIGHT_DECAY_EXCLUDE + (r"/layer_scale_\d$",)
    config.label_smoothing = 0.1

    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    return config
