"""NesT-S for CIFAR (32x32, patch 1, four levels of three layers, multi-query attention) with NesT's
recipe (config_lib.nest_cifar_config).

  python main.py --config=configs/nest_cifar_small.py --workdir=runs/nest_cifar_small
  python main.py --config=configs/nest_cifar_small.py:cifar100 ...   (CIFAR-100)

22.85M parameters with a 10-class head (experiments/results/nest_macs.md). Recipe: AdamW, lr 2.5e-4 x
batch / 256 at batch 1024, cosine, 5 warmup epochs, 300 epochs, weight decay 0.05 on everything but the
position embeddings, RandAugment 2 ops m9, random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing
0.1, drop path 0.1, random shifts of up to 4 pixels.
Expected: about 96.97% top-1 on CIFAR-10 from scratch (the paper's figure; not reproduced here). Needs
cifar10 prepared with TFDS in array_record format (see the README).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    return config_lib.nest_cifar_config("cifar_S", dataset=arg or "cifar10")
