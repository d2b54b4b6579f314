"""Quickstart: a small ViT with TokenLearner on scikit-learn's bundled digits (no download).

  python main.py --config=configs/quickstart.py --workdir=runs/quickstart    (or: make train)

Digits are upscaled from 8x8 to 32x32 and cut into 4x4 patches (64 tokens); TokenLearner v1.1
replaces them by 8 learned tokens before layer 2 of 6, so four of the six layers see 8 tokens.
Expected: about 98% top-1 on the 360-image digits test split after a few minutes on 2 CPU cores
(see the README for the measured figure and wall time).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    config = config_lib.base_config()
    config.dataset.name = "digits"
    config.dataset.image_size = 32
    config.dataset.augment = "shift"
    config.dataset.shift_pixels = 3

    config.model = config_lib.vit_model("S/4", num_classes=10, classifier="gap", token_learner=True,
                                        location=2, num_tokens=8)
    config.model.width = 64
    config.model.depth = 6
    config.model.num_heads = 4
    config.model.mlp_dim = 256

    config.batch_size = 128
    config.eval_batch_size = 360
    config.num_train_steps = 1500
    config.optimizer.learning_rate = 2e-3
    config.optimizer.warmup_steps = 200
    config.optimizer.weight_decay = 0.05
    config.label_smoothing = 0.1

    config.log_every_steps = 100
    config.eval_every_steps = 500
    config.checkpoint_every_steps = 500
    return config
