"""The TokenLearner paper's placement study (arXiv 2106.11297) in miniature, on the bundled digits.

  python -m tokenlearner_jax.sweep --config=configs/placement_study.py --workdir=runs/placement_study
  python experiments/placement_study.py --workdir=runs/placement_study    (the sweep, then table and plot)

The quickstart's model and recipe (width 64, patch 4 at 32x32: 64 patch tokens) with depth 4, so that
1/4, 1/2 and 3/4 of the depth are whole layers (1, 2 and 3), and a shorter schedule of 400 steps.
`get_sweep` varies where TokenLearner runs (before layer 0, 1/4, 1/2, 3/4 of the depth, or not at all)
and how many tokens it learns (8 or 16), over seeds 0 and 1: 18 runs, seed 0 first.
"""

from tokenlearner_jax import config_lib, sweep_lib

LOCATIONS = (0.0, 0.25, 0.5, 0.75)
NUM_TOKENS = (8, 16)
SEEDS = (0, 1)


def get_config(arg=None):
    del arg
    config = config_lib.digits_vit_config(depth=4, location=0.5, num_train_steps=400, warmup_steps=50)
    config.log_every_steps = 50
    config.eval_every_steps = 0  # only at the end
    config.checkpoint_every_steps = 200
    return config


def get_sweep(arg=None):
    del arg
    token_learner = sweep_lib.product(sweep_lib.axis("model.token_learner.location", LOCATIONS),
                                      sweep_lib.axis("model.token_learner.num_tokens", NUM_TOKENS))
    no_token_learner = [{"model.token_learner.enabled": False}]
    return sweep_lib.product(sweep_lib.axis("seed", SEEDS), token_learner + no_token_learner)
