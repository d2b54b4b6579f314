"""Quickstart: a small ViT with TokenLearner on scikit-learn's bundled digits (no download).

  python main.py --config=configs/quickstart.py --workdir=runs/quickstart    (or: make train)

Digits are upscaled from 8x8 to 32x32 and cut into 4x4 patches (64 tokens); TokenLearner v1.1
replaces them by 8 learned tokens before layer 2 of 6, so four of the six layers see 8 tokens.
Expected: 99.7% top-1 on the 360-image digits test split after 1,500 steps, about 5 minutes for the
whole command on 2 CPU cores (measured by experiments/quickstart_accuracy.py, see the README).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    config = config_lib.digits_vit_config(depth=6, location=2, num_train_steps=1500, warmup_steps=200)
    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    return config
