"""A small NesT on canvas digits (data/canvas_digits.py: a digit at a random place on a 64x64 canvas among
clutter, its box recorded), the classifier the GradCAT localisation benchmark traces.

  python main.py --config=configs/nest_canvas_digits.py --workdir=runs/nest_canvas_digits
  python -m tokenlearner_jax.visualize gradcat --workdir=runs/nest_canvas_digits --num_images=8
  python experiments/gradcat_localization.py     (trains this config, then scores GradCAT, CAM, centre box)

The 64x64 canvas is cut into 4x4 patches: a 16x16 grid, three levels of widths 32, 64, 96 (2, 4, 6
heads; 1, 1, 2 layers) on 16 blocks of 4x4, then 4, then 1, so a GradCAT path is the whole image,
a 32x32 quadrant and a 16x16 block. Recipe of configs/nest_digits.py (AdamW lr 2e-3, weight decay 0.05,
cosine, label smoothing 0.1, batch 128) with random shifts of up to 4 pixels.
Expected: 95.14% top-1 on the 1,440 test canvases after 800 steps (377,130 parameters; one run, measured by
experiments/gradcat_localization.py, whose results file has the localisation table).
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    if arg:
        raise ValueError(f"configs/nest_canvas_digits.py:{arg}: expected no argument")
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="canvas_digits", image_size=64, augment="shift", shift_pixels=4)
    config.model = models.config("nest", variant="T", num_classes=10, dims=(32, 64, 96), num_heads=(2, 4, 6),
                                 depths=(1, 1, 2), patch_size=4, drop_path_rate=0.0)

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=60, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 128
    config.num_train_steps = 800

    config.eval_batch_size = 480
    config.log_every_steps = 50
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 400
    return config
