"""ViT-B/16 on ImageNet-1k at 224, without TokenLearner: the baseline of the TokenLearner configs.

  python main.py --config=configs/vit_b16.py --workdir=runs/vit_b16

Needs imagenet2012 prepared with TFDS in array_record format (see the README). Recipe: the
TokenLearner paper's (AdamW, wd 0.3, batch 4096, 90 epochs, lr 5e-3, 10k warmup, linear decay,
sigmoid loss). 86.57M parameters, 17.6 GMACs per image. Smoke test without ImageNet:
  python main.py --config=configs/vit_b16.py --workdir=/tmp/b16 --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    return config_lib.imagenet_config(config_lib.vit_model("B/16", num_classes=1000, classifier="gap"))
