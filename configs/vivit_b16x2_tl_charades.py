"""ViViT-B/16x2 with TokenLearner on Charades (multi-label, mAP): the ViViT backbone on the task of
configs/charades_tl.py, so that the paper's two video backbones can be compared on the same data,
evaluation and views.

  python main.py --config=configs/vivit_b16x2_tl_charades.py --workdir=runs/vivit_charades \
    --config.dataset.data_dir=/data/charades --config.init_from.path=/ckpt/vit_b16_imagenet21k.npz

32 frames at stride 8 (3 fps at Charades' 24 fps: the same 10.7 s as the X(2+1)D config's 64 frames at 6
fps), 224 crops, 2x16x16 tubelets (16 slices of 196 tokens), the joint space-time encoder; TokenLearner
v1.1 learns 8 tokens per slice before layer 6 of 12, so layers 6-11 attend over 16 x 8 = 128 tokens. The
data, labels, 4 evaluation clips with max aggregation and the mAP are configs/charades_tl.py's; without
Charades the run stops with one line naming the dataset and the layout (data/charades.py). init_from.path
is a 2D ViT-B/16 (ours, a vit_jax / big_vision .npz or a timm .safetensors), its patch kernel inflated to
the tubelets (a ViViT trained on Kinetics works too, and is what the TokenLearner paper starts video
models from). Recipe: ViViT's Kinetics one (SGD with momentum, lr 0.1, cosine, global-norm clip 1),
sigmoid loss, 30 epochs of the 7,985 training videos at batch 64, classifier bias starting at -3
(about 6.8 actions of 157 per video). The TokenLearner paper reports no ViViT result on Charades; this
is our recipe, not trained here (no Charades, no accelerator).
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("multilabel")
    config.init_from.fresh_if_missing += (r"^temporal_",)
    config.dataset = recipes.dataset(
        name="charades", num_classes=157, image_size=224, num_frames=32, frame_stride=8, train_split="train",
        eval_split="test", augment="inception_crop", normalize="minus_one_one", eval_crop_fraction=224 / 256,
        eval_temporal_views=4, eval_spatial_views=1, num_workers=16)
    config.model = models.config(
        "vivit", variant="B/16", tubelet_frames=2, encoder="joint", num_classes=157, classifier="token",
        head_bias_init=-3.0, token_learner=dict(enabled=True, version="v1.1", location=0.5, num_tokens=8))

    config.loss = "sigmoid_xent"
    config.multilabel.view_aggregation = "max"
    config.optimizer = recipes.optimizer(name="sgd", momentum=0.9, learning_rate=0.1, warmup_steps=1_000,
                                         decay="cosine", weight_decay=0.0, grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_epochs = 30.0

    config.eval_batch_size = 8  # x 4 clips of 32 x 224 x 224 frames
    config.log_every_steps = 50
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 1_000
    return config
