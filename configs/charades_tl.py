"""X(2+1)D-M with TokenLearner -> transformer -> TokenFuser on Charades (multi-label, mAP): the TokenLearner
paper's Charades model (arXiv 2106.11297, 66.3 mAP), as far as its description is known
(models/x2plus1d.py says what the paper says and what this code chooses).

  python main.py --config=configs/charades_tl.py --workdir=runs/charades_tl \
    --config.dataset.data_dir=/data/charades [--config.init_from.path=/ckpt/x2plus1d_kinetics]

data_dir holds the official release (data/charades.py): Charades_v1_train.csv, Charades_v1_test.csv,
Charades_v1_classes.txt and Charades_v1_480/<id>.mp4. Without it the run stops with one line naming the
dataset and that layout. A training clip's label is the set of actions overlapping the time span of its
sampled frames; evaluation uses each video's full label set, scores 4 clips evenly spaced in time per
video, takes the max of their sigmoid probabilities per class (`--config.multilabel.view_aggregation=mean`
for the mean) and reports mAP over the classes with a positive in the test split (eval/mAP, the per-class
table in <workdir>/eval_per_class_ap.csv).

The paper's: X(2+1)D (X3D-M's widths and depths, channel-wise 3D convs factorised into 2D + 1D), every
block of the last stage with TokenLearner (8 tokens per frame; its attention from convolutions, v1.0
here) -> transformer over the 64 x 8 = 512 tokens of the clip -> TokenFuser; 64-frame clips at 6 fps
(frame_stride 4 at Charades' 24 fps), 224 x 224 in training. The paper tests at 256 x 256; the network
has no position embedding, so a trained run is evaluated there by
  python main.py --mode=eval --config=configs/charades_tl.py --workdir=runs/charades_tl \
    --config.dataset.data_dir=/data/charades --config.dataset.image_size=256 --config.dataset.eval_crop_fraction=1
Ours (not found in the paper's text available here): the optimiser and its schedule (SGD with momentum,
cosine, 60 epochs of the 7,985 training videos at batch 64), the 4 evaluation clips with max
aggregation, random-resized crops and flips, dropout 0.5 before the classifier (X3D's), the classifier
bias starting at -3 (sigmoid 0.05, about Charades' 6.8 actions of 157 per video). Like the paper's, a
Charades model is normally fine-tuned from a Kinetics one: pass --config.init_from.path (a workdir of
this model trained on Kinetics/AViD; the classifier is re-initialised when the class count differs).
Not trained here (no Charades, no accelerator); smoke test on CPU:
  python main.py --config=configs/charades_tl.py --workdir=/tmp/charades --config.dataset.name=synthetic_multilabel \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 --config.dataset.synthetic_eval_size=2 \
    --config.dataset.num_frames=4 --config.dataset.image_size=128 --config.dataset.eval_temporal_views=1
"""

from tokenlearner_jax import models, recipes

CHARADES_TRAIN_VIDEOS = 7_985


def get_config(arg=None):
    del arg
    config = recipes.base("multilabel")
    config.dataset = recipes.dataset(
        name="charades", num_classes=157, image_size=224, num_frames=64, frame_stride=4, train_split="train",
        eval_split="test", augment="inception_crop", normalize="imagenet", eval_crop_fraction=224 / 256,
        eval_temporal_views=4, eval_spatial_views=1, num_workers=16)
    config.model = models.config(
        "x2plus1d", variant="M", num_classes=157, head_bias_init=-3.0,
        token_learner=dict(enabled=True, version="v1.0", num_tokens=8, location=-1, use_fuser=True))

    config.loss = "sigmoid_xent"
    config.multilabel.view_aggregation = "max"
    config.optimizer = recipes.optimizer(name="sgd", momentum=0.9, learning_rate=0.1, warmup_steps=1_000,
                                         decay="cosine", weight_decay=5e-5, grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_epochs = 60.0

    config.eval_batch_size = 8  # x 4 clips of 64 x 224 x 224 frames
    config.log_every_steps = 50
    config.eval_every_steps = 2_000
    config.checkpoint_every_steps = 1_000
    return config
