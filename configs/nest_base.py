"""NesT-B on ImageNet-1k at 224 with the official recipe (config_lib.nest_imagenet_config).

  python main.py --config=configs/nest_base.py --workdir=runs/nest_base
  python main.py --config=configs/nest_base.py:512 ...   (another global batch; lr and warmup follow it)

67.72M parameters, 17.93 GMACs (dot + conv) per image (experiments/results/nest_macs.md). Recipe: AdamW, lr 2.5e-4 x batch / 256, cosine,
20 warmup epochs, 300 epochs, weight decay 0.05 on everything but the position embeddings, RandAugment
2 ops m9, random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1.
Expected: about 83.8% top-1 on the validation split after 300 epochs (the paper's figure; not reproduced
here). Needs imagenet2012 in array_record format (see the README).
timm's weights (nest_base_jx.goog_in1k, ported from the official code):
  python -m tokenlearner_jax.convert --source=nest_base_jx.safetensors --config=configs/nest_base.py --output=DIR
Smoke test on CPU without ImageNet:
  python main.py --config=configs/nest_base.py --workdir=/tmp/nest --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_workers=0
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    return config_lib.nest_imagenet_config("B", batch_size=int(arg) if arg else 1024)
