"""A small NesT on scikit-learn's bundled digits (no download), for a few CPU minutes.

  python main.py --config=configs/nest_digits.py --workdir=runs/nest_digits
  python main.py --config=configs/nest_digits.py:vit --workdir=runs/vit_digits   (the ViT it is compared with)

Digits are upscaled from 8x8 to 32x32 and cut into 2x2 patches: a 16x16 grid, three levels of widths
32, 64, 96 (2, 4, 6 heads of 16 channels; 1, 1, 2 layers) on 16 blocks of 4x4, then 4, then 1 after
each block aggregation; 376k parameters, 18.7M dot + conv MACs per image. `:vit` swaps in the
quickstart's ViT without TokenLearner (width 64, 6 layers, 4 heads, 4x4 patches: 308k parameters,
22.2M MACs) under the same recipe: AdamW lr 2e-3, weight decay 0.05 (not on biases, norms and
position embeddings), 60 warmup steps, cosine, batch 128, label smoothing 0.1, random shifts of up to
3 pixels (experiments/nest_data_efficiency.py compares the two at several step budgets).
Class-attention maps of a finished run:
  python -m tokenlearner_jax.visualize class_attention --workdir=runs/nest_digits
Expected: about 99.4% top-1 on the 360-image test split after 600 steps (experiments/results/nest_digits.md;
that run used 7.1 min of CPU time, user + sys, but 41 min of wall time on two cores shared with other
jobs at a load of about 14).
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="digits", image_size=32, augment="shift", shift_pixels=3)
    if arg == "vit":
        config.model = models.config("vit", variant="S/4", num_classes=10, classifier="gap", width=64, depth=6,
                                     num_heads=4, mlp_dim=256)
    elif arg:
        raise ValueError(f"configs/nest_digits.py:{arg}: expected no argument (NesT) or 'vit'")
    else:
        config.model = models.config("nest", variant="T", num_classes=10, dims=(32, 64, 96), num_heads=(2, 4, 6),
                                     depths=(1, 1, 2), patch_size=2, drop_path_rate=0.0)

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=60, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 128
    config.num_train_steps = 600

    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 200
    config.checkpoint_every_steps = 200
    return config
