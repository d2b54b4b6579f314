"""ViT-B/16 with TokenLearner v1.1 learning 8 tokens before layer 6 of 12 ("at 1/2"), ImageNet-1k at 224.

  python main.py --config=configs/vit_b16_tl_half.py --workdir=runs/vit_b16_tl_half

Layers 6-11 see 8 tokens instead of 196: about 9.3 GMACs per image against 17.6 for ViT-B/16
(experiments/benchmark_tokenlearner.py). Needs imagenet2012 in array_record format (see the README).
Smoke test on CPU without ImageNet:
  python main.py --config=configs/vit_b16_tl_half.py --workdir=/tmp/tl --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    return config_lib.imagenet_config(config_lib.vit_model(
        "B/16", num_classes=1000, classifier="gap", token_learner=True, location=0.5, num_tokens=8))
