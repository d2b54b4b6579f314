"""Quickstart for video: a small ViViT with TokenLearner on the bundled moving digits (no download).

  python main.py --config=configs/quickstart_video.py --workdir=runs/quickstart_video    (or: make train-video)

The clips (scikit-learn digits moving right, left, down or up across a 32x32 canvas; 40 classes, digit x
direction) are written as mp4 files on first use (about a minute) and decoded with PyAV like any user
video. 8 frames at stride 2 in 2x4x4 tubelets give 4 temporal slices of 64 tokens; TokenLearner v1.1
learns 8 tokens per slice before layer 1 of 4, so three of the four layers see 32 tokens instead of 256.
No spatial augmentation (a flip would change the direction of motion).
Expected: 64.0% top-1 (95.6% top-5) on the 1,440 test clips (40 classes, chance 2.5%) after 600 steps, about
5 minutes of CPU time on 2 cores (experiments/video_tokenlearner_digits.py,
experiments/results/video_tokenlearner_digits.md).
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.init_from.fresh_if_missing += (r"^temporal_",)
    config.dataset = recipes.dataset(name="moving_digits", image_size=32, num_frames=8, frame_stride=2,
                                     augment="none", num_workers=2)
    config.model = models.config(
        "vivit", variant="S/4", tubelet_frames=2, encoder="joint", num_classes=40, classifier="gap",
        width=64, depth=4, num_heads=4, mlp_dim=128,
        token_learner=dict(enabled=True, version="v1.1", location=1, num_tokens=8, gelu="erf"))

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=100, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 32
    config.num_train_steps = 600

    config.eval_batch_size = 360
    config.log_every_steps = 100
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    return config
