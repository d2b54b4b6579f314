"""MaxViT-S on ImageNet-1k at 224 with the official recipe (config_lib.maxvit_imagenet_config).

  python main.py --config=configs/maxvit_small.py --workdir=runs/maxvit_small
  python main.py --config=configs/maxvit_small.py:1024 ...   (another global batch; lr and warmup follow it)

68.93M parameters (experiments/results/maxvit_macs.md has the MACs). Expected: about 84.45% top-1 on the
validation split after 300 epochs at batch 4096 (the paper's figure; not reproduced here). Needs
imagenet2012 in array_record format (see the README). timm's published weights (maxvit_small_tf_224.in1k,
or _384 / _512 with --config.dataset.image_size=384 / 512: window and grid follow the resolution):
  python -m tokenlearner_jax.convert --source=model.safetensors --config=configs/maxvit_small.py --output=DIR
Smoke test on CPU without ImageNet:
  python main.py --config=configs/maxvit_small.py --workdir=/tmp/mv --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_workers=0
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    return config_lib.maxvit_imagenet_config("S", batch_size=int(arg) if arg else 4096)
