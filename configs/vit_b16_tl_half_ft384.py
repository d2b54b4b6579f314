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
in the TokenLearner paper. Recipe: the ViT paper's fine-tuning (SGD with momentum 0.9, no weight decay,
global-norm clip 1.0, batch 512, 20k steps, 500 warmup steps, cosine decay, lr 0.01, softmax loss).
Few-shot evaluation every 10k steps on whichever of its datasets are prepared. Needs imagenet2012 in
array_record format (see the README). 28.7 GMACs per image in the paper's count for this model.
Smoke test without ImageNet (any tiny checkpoint of the same width, e.g. a converted one):
  python main.py --config=configs/vit_b16_tl_half_ft384.py --workdir=/tmp/ft --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.init_from.path=CHECKPOINT
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    config = config_lib.imagenet_config(config_lib.vit_model(
        "B/16", num_classes=1000, classifier="gap", token_learner=True, location=0.5, num_tokens=8))
    config.init_from.path = arg or "/path/to/ViT-B_16.npz"  # set: --config.init_from.path=...
    config.init_from.exclude = (r"^cls$", r"^pre_logits/", r"^head/")

    config.dataset.image_size = 384
    config.dataset.train_split = "train[:99%]"
    config.dataset.eval_split = "validation"
    config.model.head_bias_init = 0.0
    config.loss = "softmax_xent"
    config.batch_size = 512
    config.eval_batch_size = 512
    config.num_train_steps = 20_000
    config.optimizer.name = "sgd"
    config.optimizer.momentum = 0.9
    config.optimizer.learning_rate = 0.01
    config.optimizer.warmup_steps = 500
    config.optimizer.decay = "cosine"
    config.optimizer.weight_decay = 0.0
    config.optimizer.grad_clip_norm = 1.0
    config.eval_every_steps = 2000
    config.checkpoint_every_steps = 1000
    config.fewshot.every_steps = 10_000
    return config
