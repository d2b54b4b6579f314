"""ViT-B/16 with TokenLearner + TokenFuser from layer 6 on (8 tokens), ImageNet-1k at 224.

  python main.py --config=configs/vit_b16_tl_fuser.py --workdir=runs/vit_b16_tl_fuser

Every layer from 6 on runs TokenLearner -> transformer block on 8 tokens -> TokenFuser -> + residual,
so all 196 positions are kept; the fuser's token-mixing Dense starts at zero, so each fused layer
starts as the identity on the patch tokens. Needs imagenet2012 in array_record format (see the README).
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    return config_lib.imagenet_config(config_lib.vit_model(
        "B/16", num_classes=1000, classifier="gap", token_learner=True, location=0.5, num_tokens=8,
        use_fuser=True))
