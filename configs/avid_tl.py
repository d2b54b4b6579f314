"""X(2+1)D-M with TokenLearner -> transformer -> TokenFuser on AViD (887 classes, top-1): the TokenLearner
paper's AViD model (arXiv 2106.11297), the network of configs/charades_tl.py with a softmax classifier
(models/x2plus1d.py says what the paper says and what this code chooses).

  python main.py --config=configs/avid_tl.py --workdir=runs/avid_tl --config.dataset.data_dir=/data/avid

AViD (Piergiovanni and Ryoo, NeurIPS 2020: anonymised action videos from many countries, 887 classes,
about 410k training and 40k test clips of 3 to 15 s) is read as a video list or class folders
(data/video.py): <data_dir>/train.csv and <data_dir>/test.csv with the header path,label[,start,end], or
<data_dir>/<split>/<class>/<clip>.mp4. Without it the run stops with one line naming the dataset and
that layout. eval/accuracy is top-1 on the test split, the logits averaged over 3 clips evenly spaced
in time per video.

The paper's: X(2+1)D-M, every block of the last stage with TokenLearner (8 tokens per frame, v1.0 here)
-> transformer -> TokenFuser; 64-frame clips, 224 x 224 in training, 256 x 256 in testing (evaluate a
trained run there with --mode=eval --config.dataset.image_size=256 --config.dataset.eval_crop_fraction=1;
the network has no position embedding). Ours (not in the paper's text available here): frame stride 2,
3 evaluation clips, the optimiser and schedule (SGD with momentum, cosine, 40 epochs at batch 64), label
smoothing 0.1, random-resized crops and flips, dropout 0.5 (X3D's).
Not trained here (no AViD, no accelerator); smoke test on CPU:
  python main.py --config=configs/avid_tl.py --workdir=/tmp/avid --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 --config.dataset.synthetic_eval_size=2 \
    --config.dataset.num_frames=4 --config.dataset.image_size=128 --config.dataset.eval_temporal_views=1
"""

from tokenlearner_jax import models, recipes


def get_config(arg=None):
    del arg
    config = recipes.base("classification")
    config.dataset = recipes.dataset(
        name="avid", num_classes=887, image_size=224, num_frames=64, frame_stride=2, train_split="train",
        eval_split="test", augment="inception_crop", normalize="imagenet", eval_crop_fraction=224 / 256,
        eval_temporal_views=3, eval_spatial_views=1, num_workers=16)
    config.model = models.config(
        "x2plus1d", variant="M", num_classes=887,
        token_learner=dict(enabled=True, version="v1.0", num_tokens=8, location=-1, use_fuser=True))

    config.loss = "softmax_xent"
    config.label_smoothing = 0.1
    config.optimizer = recipes.optimizer(name="sgd", momentum=0.9, learning_rate=0.1, warmup_steps=5_000,
                                         decay="cosine", weight_decay=5e-5, grad_clip_norm=1.0)
    config.batch_size = 64
    config.num_epochs = 40.0

    config.eval_batch_size = 8  # x 3 clips of 64 x 224 x 224 frames
    config.log_every_steps = 100
    config.eval_every_steps = 20_000
    config.checkpoint_every_steps = 2_000
    return config
