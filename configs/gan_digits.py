"""GenNesT on scikit-learn's bundled digits at 16x16 (no download), for CPU runs; `:sagan` is the SAGAN-style
convolutional generator it is compared with, `:classifier` the digits classifier whose features the
Fréchet distance uses.

  python main.py --config=configs/gan_digits.py:classifier --workdir=runs/gan_digits_classifier   (first)
  python main.py --config=configs/gan_digits.py --workdir=runs/gan_digits
  python main.py --config=configs/gan_digits.py:sagan --workdir=runs/gan_digits_sagan
  python -m tokenlearner_jax.visualize samples --workdir=runs/gan_digits      (the EMA generator's samples)
  python -m tokenlearner_jax.visualize curves --workdir=runs/gan_digits       (losses and eval/fd)

The generators (models/gennest.py and models/sagan_generator.py, variant 'digits'): GenNesT maps a
64-d latent to one 4x4 block of width 64, then three levels (widths 64, 32, 32; 4, 2, 2 heads; one
layer each) on 1, 4 and 16 blocks of 4x4 with a pixel-shuffle de-aggregation between them, 264k
parameters; the SAGAN-style generator has two residual up-sampling blocks (80 and 40 channels) with
self-attention at 8x8, 257k parameters. Both train against the same SAGAN-style discriminator
(channels 24, 48, 96, self-attention at 8x8; 168k parameters) with the hinge loss, SAGAN's two Adam
optimizers (generator 1e-4, discriminator 4e-4, b1 = 0, b2 = 0.9), batch 64, one discriminator step
per generator step, and an EMA of the generator (0.999) that is evaluated.

Every 250 steps, eval/fd in metrics.jsonl and TensorBoard is the Fréchet distance between the 360 test
digits and as many EMA samples, in the 64-d pre-logit features of the `:classifier` run (a two-level
NesT on 16x16 digits; config.gan.fd.path). Train that run first: without it the GAN stops before its
first step with one line naming config.gan.fd.path and the command above. These distances are not FIDs
and are comparable only between runs that use the same classifier checkpoint.
Expected (experiments/results/gennest_vs_sagan.md, one seed each): after 1,500 steps, FD 3.82 for `:sagan`
and 146.85 for GenNesT, whose samples had collapsed to nearly one image for every latent (its best FD,
77.77, at step 250); about 0.6-0.7 steps/s each with the two runs side by side on 2 busy CPU cores.
"""

from tokenlearner_jax import models, recipes

CLASSIFIER_WORKDIR = "runs/gan_digits_classifier"


def classifier_config():
    """A two-level NesT on 16x16 digits (2x2 patches: an 8x8 grid, blocks of 4x4), the FD feature network."""
    config = recipes.base("classification")
    config.dataset = recipes.dataset(name="digits", image_size=16, augment="shift", shift_pixels=1)
    config.model = models.config("nest", variant="T", num_classes=10, dims=(32, 64), num_heads=(2, 4),
                                 depths=(1, 2), patch_size=2, drop_path_rate=0.0)
    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="adamw", learning_rate=2e-3, warmup_steps=30, decay="cosine",
                                         weight_decay=0.05, grad_clip_norm=1.0)
    config.batch_size = 128
    config.num_train_steps = 300
    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 100
    config.checkpoint_every_steps = 300
    return config


def get_config(arg=None):
    if arg == "classifier":
        return classifier_config()
    if arg not in (None, "", "sagan"):
        raise ValueError(f"configs/gan_digits.py:{arg}: expected no argument (GenNesT), 'sagan' or 'classifier'")
    config = recipes.base("gan")
    config.dataset = recipes.dataset(name="digits", image_size=16, augment="none", normalize="minus_one_one")
    if arg == "sagan":
        config.gan.generator = models.config("sagan_generator", variant="digits")
    else:
        config.gan.generator = models.config("gennest", variant="digits")
    config.gan.discriminator = models.config("sagan_discriminator", variant="digits")
    config.gan.fd.path = CLASSIFIER_WORKDIR
    config.gan.fd.train_command = (f"python main.py --config=configs/gan_digits.py:classifier "
                                   f"--workdir={CLASSIFIER_WORKDIR}")

    config.batch_size = 64
    config.num_train_steps = 1500
    config.eval_batch_size = 360
    config.log_every_steps = 50
    config.eval_every_steps = 250
    config.checkpoint_every_steps = 250
    config.keep_checkpoints = 6
    return config
