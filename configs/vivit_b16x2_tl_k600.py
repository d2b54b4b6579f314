"""ViViT-B/16x2 with TokenLearner on Kinetics-600: 32 frames at stride 2, 224 crops, 2x16x16 tubelets
(16 temporal slices of 196 tokens), joint space-time encoder; TokenLearner v1.1 learns 8 tokens per
slice before layer 6 of 12, so layers 6-11 see 16 x 8 = 128 tokens instead of 3,136.

  python main.py --config=configs/vivit_b16x2_tl_k600.py --workdir=runs/vivit_k600 \
    --config.dataset.data_dir=/data/kinetics600 --config.init_from.path=/ckpt/vit_b16_imagenet21k.npz

ViViT's recipe (arXiv 2103.15691 and its released Kinetics-400 config): random-resized 224 crops + flips,
evaluation on 4 clips x 3 crops of 224 from a 256 shorter side (logits averaged), SGD with momentum 0.9,
lr 0.1, 2.5 warmup epochs (8.4k steps: Kinetics sizes change as videos leave YouTube, so the warmup is
fixed in steps, 2.5 epochs of 214,834 clips at batch 64) then cosine, 30 epochs, batch 64, global-norm
clip 1.0, no weight decay, no label smoothing. data_dir holds train/ and validation/ as one folder per
class (<class>/<clip>.mp4) or as train.csv / validation.csv lists (path,label[,start,end]); see
data/video.py. init_from.path is a 2D ViT-B/16 (ours, a vit_jax / big_vision .npz or a timm
.safetensors), its patch kernel inflated to the tubelets by central-frame initialisation
(--config.init_from.inflate=filter for the other). Without Kinetics the run stops with the expected
layout. Not trained here (no Kinetics, no accelerator); smoke test on CPU:
  python main.py --config=configs/vivit_b16x2_tl_k600.py --workdir=/tmp/k600 --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_frames=4 --config.dataset.image_size=64
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.init_from.fresh_if_missing += (r"^temporal_",)
    config.dataset = recipes.dataset(
        name="kinetics600", num_classes=600, image_size=224, num_frames=32, frame_stride=2,
        train_split="train", eval_split="validation", augment="inception_crop", normalize="minus_one_one",
        eval_crop_fraction=224 / 256, eval_temporal_views=4, eval_spatial_views=3, num_workers=16)
    config.model = models.config(
        "vivit", variant="B/16", tubelet_frames=2, encoder="joint", num_classes=600, classifier="token",
        token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8))

    config.loss = "softmax_xent"
    config.optimizer = recipes.optimizer(name="sgd", momentum=0.9, learning_rate=0.1, warmup_steps=8_400,
                                         decay="cosine", weight_decay=0.0, grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_epochs = 30.0

    config.eval_batch_size = 8  # x 12 views of 32 x 224 x 224 frames
    config.log_every_steps = 100
    config.eval_every_steps = 10_000
    config.checkpoint_every_steps = 2000
    return config
