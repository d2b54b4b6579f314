"""PoolFormer-M48 on ImageNet-1k at 224 with the official recipe (config_lib.poolformer_imagenet_config).

  python main.py --config=configs/poolformer_m48.py --workdir=runs/poolformer_m48
  python main.py --config=configs/poolformer_m48.py:512 ...   (another global batch; lr and warmup follow it)

73.5M parameters, 11.53 GMACs per image (dot / conv MACs; experiments/results/poolformer_macs.md).
Expected: about 82.5% top-1 on the validation split after 300 epochs at batch 1024 with eval crop
0.95 (the paper's and timm's figure; not reproduced here). Needs imagenet2012 in array_record
format (see the README).
timm's published weights (poolformer_m48.sail_in1k) need timm's head ordering:
  python -m tokenlearner_jax.convert --source=poolformer_m48.safetensors --config=configs/poolformer_m48.py \
    --config.model.head_norm=pooled_layer_norm
Smoke test on CPU without ImageNet:
  python main.py --config=configs/poolformer_m48.py --workdir=/tmp/pf --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_workers=0
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    return config_lib.poolformer_imagenet_config("M48", batch_size=int(arg) if arg else 1024)
