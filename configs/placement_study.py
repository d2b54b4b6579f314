"""The TokenLearner paper's placement study (arXiv 2106.11297) in miniature, on the bundled digits.

  python -m tokenlearner_jax.sweep --config=configs/placement_study.py --workdir=runs/placement_study
  python experiments/placement_study.py --workdir=runs/placement_study    (the sweep, then table and plot)

The quickstart's model and recipe (width 64, patch 4 at 32x32: 64 patch tokens) with depth 4, so that
1/4, 1/2 and 3/4 of the depth are whole layers (1, 2 and 3), and a shorter schedule of 400 steps.
`get_sweep` varies where TokenLearner runs (before layer 0, 1/4, 1/2, 3/4 of the depth, or not at all)
and how many tokens it learns (8 or 16), over seeds 0 and 1: 18 runs, seed 0 first.
Results: experiments/results/placement_study.md.
"""

from tokenlearner_jax import models, recipes
from tokenlearner_jax.recipes import sweeps

LOCATIONS = (0.0, 0.25, 0.5, 0.75)
NUM_TOKENS = (8, 16)
SEEDS = (0, 1)


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="digits", image_size=32, augment="shift", shift_pixels=3)
    config.model = models.config(
        "vit", variant="S/4", num_classes=10, classifier="gap", width=64, depth=4, num_heads=4, mlp_dim=256,
        token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8, gelu="erf"))

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=50, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 128
    config.num_train_steps = 400

    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 0  # only at the end
    config.checkpoint_every_steps = 200
    return config


def get_sweep(arg=None):
    del arg
    token_learner = sweeps.product(sweeps.axis("model.token_learner.location", LOCATIONS),
                                   sweeps.axis("model.token_learner.num_tokens", NUM_TOKENS))
    no_token_learner = [{"model.token_learner.enabled": False}]
    return sweeps.product(sweeps.axis("seed", SEEDS), token_learner + no_token_learner)
