"""Multi-label video on the bundled moving digits (no download): X(2+1)D or ViViT, with TokenLearner.

  python main.py --config=configs/quickstart_video_multilabel.py --workdir=runs/video_multilabel
  python main.py --config=configs/quickstart_video_multilabel.py:vivit --workdir=runs/video_multilabel_vivit

Clips of 64x64 with one to three scikit-learn digits, each moving two pixels a frame in its own direction
(data/video_digits.py: 3,000 train / 600 test clips, written as mp4 files on first use, about a minute).
The label is the set of digits present and of their directions of motion (14 classes: '0'..'9', right,
left, down, up), so a model must tell what moves and where to. 8 frames at stride 2 (the whole 16-frame
clip); no spatial augmentation (a flip would change the directions). Multi-label task: sigmoid loss, mAP
over the 600 test clips.

- 'x2plus1d' (default): the TokenLearner paper's Charades network at toy size (models/x2plus1d.py,
  variant 'tiny': three stages, widths 8, 16, 32), TokenLearner v1.1 learning 8 tokens per frame ->
  transformer over the 8 x 8 = 64 tokens of the clip -> TokenFuser, in both blocks of the last stage.
- 'vivit': a joint ViViT of 4 layers of width 64 on 2x8x8 tubelets (4 slices of 64 tokens), TokenLearner
  v1.1 learning 8 tokens per slice before layer 1.
Either with `--config.model.token_learner.enabled=False` is the same backbone without TokenLearner.

Measured (experiments/video_multilabel_digits.py --num-train-steps=400, experiments/results/
video_multilabel_digits.md; 400 steps, not this config's 600, one seed, on 2 shared CPU cores): test mAP
44.11% (X(2+1)D, 20.6 MMACs per clip), 43.22% without TokenLearner (6.8); ViViT 48.85% (27.9 MMACs),
49.24% without TokenLearner (73.4); 4.3 to 8.1 min of CPU time a run.
"""

from tokenlearner_jax import models, recipes

NUM_CLASSES = 14  # 10 digits + 4 directions
BACKBONES = ("x2plus1d", "vivit")


def get_config(arg=None):
    backbone = arg or "x2plus1d"
    if backbone not in BACKBONES:
        raise ValueError(f"configs/quickstart_video_multilabel.py:{backbone}: expected one of {BACKBONES}")
    config = recipes.base("multilabel")
    config.dataset = recipes.dataset(name="moving_digits_multilabel", moving_digits_directions=True, image_size=64,
                                     num_frames=8, frame_stride=2, augment="none", num_workers=2)
    token_learner = dict(enabled=True, version="v1.1", num_tokens=8)
    # Sigmoid outputs start near the classes' mean frequency (about 2 positives of 14: logit -2).
    if backbone == "x2plus1d":
        config.model = models.config("x2plus1d", variant="tiny", num_classes=NUM_CLASSES, dropout_rate=0.1,
                                     head_bias_init=-2.0, token_learner=dict(token_learner, location=-1))
    else:
        config.init_from.fresh_if_missing += (r"^temporal_",)
        config.model = models.config(
            "vivit", variant="S/8", tubelet_frames=2, encoder="joint", num_classes=NUM_CLASSES, classifier="gap",
            width=64, depth=4, num_heads=4, mlp_dim=128, head_bias_init=-2.0,
            token_learner=dict(token_learner, location=1))

    config.loss = "sigmoid_xent"
    config.multilabel.view_aggregation = "max"
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=100, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 32
    config.num_train_steps = 600

    config.eval_batch_size = 100
    config.log_every_steps = 100
    config.eval_every_steps = 300
    config.checkpoint_every_steps = 300
    return config
