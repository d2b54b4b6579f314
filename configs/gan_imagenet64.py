"""GenNesT on ImageNet 64x64 (TFDS imagenet_resized/64x64), unconditional; `:sagan` is the SAGAN-style
convolutional generator of about the same parameter count (the comparison of the NesT paper).

  python main.py --config=configs/gan_imagenet64.py --workdir=runs/gan_imagenet64
  python main.py --config=configs/gan_imagenet64.py:sagan --workdir=runs/gan_imagenet64_sagan
  python -m tokenlearner_jax.visualize samples --workdir=runs/gan_imagenet64

Data: `tfds build imagenet_resized/64x64 --file_format=array_record` (the run stops with that instruction
when it is not prepared); 1,281,167 training images, the 50,000 validation images for the Fréchet distance.
Generators: models/gennest.py 'imagenet64' (latent 128 -> one 8x8 block, levels of widths 512, 256, 128
on 1, 4, 16 blocks, pixel-shuffle de-aggregation, 2x2 pixel patches) and models/sagan_generator.py '64';
discriminator: models/sagan_discriminator.py '64'. Recipe: SAGAN's (arXiv 1805.08318): hinge loss,
Adam b1 = 0, b2 = 0.9, learning rates 1e-4 (generator) and 4e-4 (discriminator), batch 256, one
discriminator step per generator step, generator EMA 0.9999. The NesT paper's own GenNesT recipe (its
step count, batch and learning rates) was not available to check against: those values are SAGAN's, and
the 500k steps are ours.

The Fréchet distance uses InceptionV3's pool-3 features (config.gan.fd.network='inception_v3'): set
config.gan.fd.path to a weights file made as docs/nest.md says; without it the run stops before its first
step with one line naming the field.
Not run here (no ImageNet and no accelerator on the machine this was written on).
"""

from tokenlearner_jax import models, recipes

INCEPTION_HINT = "see docs/nest.md, 'InceptionV3 weights for the Fréchet distance'"


def get_config(arg=None):
    if arg not in (None, "", "sagan"):
        raise ValueError(f"configs/gan_imagenet64.py:{arg}: expected no argument (GenNesT) or 'sagan'")
    config = recipes.base("gan")
    config.dataset = recipes.dataset(name="imagenet_resized/64x64", image_size=64, augment="none",
                                     eval_crop_fraction=1.0, normalize="minus_one_one", eval_split="validation",
                                     num_workers=8)
    if arg == "sagan":
        config.gan.generator = models.config("sagan_generator", variant="64")
    else:
        config.gan.generator = models.config("gennest", variant="imagenet64")
    config.gan.discriminator = models.config("sagan_discriminator", variant="64")
    config.gan.ema_decay = 0.9999
    config.gan.fd.network = "inception_v3"
    config.gan.fd.path = ""
    config.gan.fd.train_command = INCEPTION_HINT

    config.batch_size = 256
    config.num_train_steps = 500_000
    config.eval_batch_size = 500
    config.log_every_steps = 500
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 5_000
    return config
