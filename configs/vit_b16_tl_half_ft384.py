"""Fine-tunes a pre-trained ViT-B/16 at 384 on ImageNet-1k with TokenLearner inserted (8 tokens before layer 6).

  python main.py --config=configs/vit_b16_tl_half_ft384.py --workdir=runs/vit_b16_tl_half_ft384 \
    --config.init_from.path=/path/to/ViT-B_16.npz
  (or --config=configs/vit_b16_tl_half_ft384.py:/path/to/ViT-B_16.npz)

The checkpoint (config.init_from.path) is a ViT-B/16 in the vit_jax or big_vision .npz layout (e.g. the
ImageNet-21k ViT-B_16.npz), a timm model.safetensors (vit_base_patch16_224.*), or the output of
`python -m tokenlearner_jax.convert`. What changes on the way, each step logged and written to
<workdir>/init_from.json: the 14x14 position embeddings are resampled to the 24x24 grid of 384 inputs,
TokenLearner starts fresh, the head starts fresh (1000 classes; zeros), and the source's class token
and pre-logits layer (if any) are dropped because the model classifies by global average pooling, as
in the TokenLearner paper. The encoder's GELU is the tanh approximation vit_jax trained with (set
--config.model.gelu=erf for a timm file; a mismatch is logged at the start). Recipe: the ViT paper's fine-tuning (SGD with momentum 0.9, no weight decay,
global-norm clip 1.0, batch 512, 20k steps, 500 warmup steps, cosine decay, lr 0.01, softmax loss).
Few-shot evaluation every 10k steps on whichever of its datasets are prepared. Needs imagenet2012 in
array_record format (docs/data.md). 28.7 GMACs per image in the paper's count for this model.
Smoke test without ImageNet (any tiny checkpoint of the same width, e.g. a converted one):
  python main.py --config=configs/vit_b16_tl_half_ft384.py --workdir=/tmp/ft --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.init_from.path=CHECKPOINT
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    config = recipes.base("classification")
    config.init_from.path = arg or "/path/to/ViT-B_16.npz"  # set: --config.init_from.path=...
    config.init_from.exclude = (r"^cls$", r"^pre_logits/", r"^head/")
    config.dataset = recipes.dataset(name="imagenet2012", image_size=384, train_split="train[:99%]",
                                     eval_split="validation", augment="inception_crop", normalize="minus_one_one",
                                     num_workers=16)
    config.model = models.config(
        "vit", variant="B/16", num_classes=1000, classifier="gap",
        gelu="tanh",  # the GELU vit_jax's checkpoints were trained with (use 'erf' from a timm .safetensors)
        token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8))

    config.loss = "softmax_xent"
    config.optimizer = recipes.optimizer(name="sgd", momentum=0.9, learning_rate=0.01, warmup_steps=500,
                                         decay="cosine", weight_decay=0.0, grad_clip_norm=1.0)
    config.batch_size = 512
    config.num_train_steps = 20_000

    config.eval_batch_size = 512
    config.log_every_steps = 100
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 1000
    config.fewshot.every_steps = 10_000
    return config
