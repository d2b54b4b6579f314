"""GenNesT on CelebA at 64x64 (TFDS celeb_a), unconditional; `:sagan` is the SAGAN-style convolutional
generator it is compared with.

  python main.py --config=configs/gan_celeba64.py --workdir=runs/gan_celeba64
  python main.py --config=configs/gan_celeba64.py:sagan --workdir=runs/gan_celeba64_sagan

Data: `tfds build celeb_a --file_format=array_record` (the run stops with that instruction when it is not
prepared; CelebA's files need a manual download). The 178x218 images are centre-cropped to 140x140 and
resized to 64x64 (the usual CelebA-64 crop: the eval preprocessing's central crop of 140/178 of the
shorter side, with no augmentation in training); the 19,962 test images for the Fréchet distance.
Generators: models/gennest.py 'celeba64' (latent 128 -> one 8x8 block, levels of widths 256, 128, 64,
2x2 pixel patches; 5.78M parameters) and models/sagan_generator.py '64' at base width 24 (5.01M; the
nearest width that self-attention allows); discriminator: models/sagan_discriminator.py '64'. Recipe: SAGAN's (hinge loss, Adam
b1 = 0, b2 = 0.9, learning rates 1e-4 and 4e-4, batch 64 here, 1:1 steps, generator EMA 0.9999); the NesT
paper's own CelebA recipe was not available to check against, and the 200k steps are ours.

TFDS's celeb_a has attributes and landmarks but no 'label' feature: it is read as an unlabelled dataset,
which only the gan task accepts.
The Fréchet distance uses InceptionV3's pool-3 features: set config.gan.fd.path to a weights file made as
docs/nest.md says. Not run here (no CelebA and no accelerator on the machine this was written on).
"""

from tokenlearner_jax import models, recipes

INCEPTION_HINT = "see docs/nest.md, 'InceptionV3 weights for the Fréchet distance'"


def get_config(arg=None):
    if arg not in (None, "", "sagan"):
        raise ValueError(f"configs/gan_celeba64.py:{arg}: expected no argument (GenNesT) or 'sagan'")
    config = recipes.base("gan")
    config.dataset = recipes.dataset(name="celeb_a", image_size=64, augment="none", eval_crop_fraction=140 / 178,
                                     normalize="minus_one_one", eval_split="test", num_workers=8)
    if arg == "sagan":
        config.gan.generator = models.config("sagan_generator", variant="64", channels=24)
    else:
        config.gan.generator = models.config("gennest", variant="celeba64")
    config.gan.discriminator = models.config("sagan_discriminator", variant="64")
    config.gan.ema_decay = 0.9999
    config.gan.fd.network = "inception_v3"
    config.gan.fd.path = ""
    config.gan.fd.train_command = INCEPTION_HINT

    config.batch_size = 64
    config.num_train_steps = 200_000
    config.eval_batch_size = 500
    config.log_every_steps = 500
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 5_000
    return config
