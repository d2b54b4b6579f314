"""Quickstart for video: a small ViViT with TokenLearner on the bundled moving digits (no download).

  python main.py --config=configs/quickstart_video.py --workdir=runs/quickstart_video

The clips (scikit-learn digits moving right, left, down or up across a 32x32 canvas; 40 classes, digit x
direction) are written as mp4 files on first use (about a minute) and decoded with PyAV like any user
video. 8 frames at stride 2 in 2x4x4 tubelets give 4 temporal slices of 64 tokens; TokenLearner v1.1
learns 8 tokens per slice before layer 1 of 4, so three of the four layers see 32 tokens instead of 256.
Expected: 64.0% top-1 (95.6% top-5) on the 1,440 test clips (40 classes, chance 2.5%) after 600 steps, about
5 minutes of CPU time on 2 cores (measured by experiments/video_tokenlearner_digits.py, see the README).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    config = config_lib.moving_digits_vivit_config(token_learner=True, num_train_steps=600)
    config.log_every_steps = 100
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    return config
