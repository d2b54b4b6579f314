"""ViViT-B/16x2 with TokenLearner on Kinetics-400: 32 frames at stride 2, 224 crops, 2x16x16 tubelets
(16 temporal slices of 196 tokens), joint space-time encoder; TokenLearner v1.1 learns 8 tokens per
slice before layer 6 of 12, so layers 6-11 see 16 x 8 = 128 tokens instead of 3,136. ViViT's recipe
(config_lib.kinetics_vivit_config): SGD momentum 0.9, lr 0.1, cosine, 30 epochs, batch 64, evaluation
on 4 clips x 3 crops with the logits averaged.

  python main.py --config=configs/vivit_b16x2_tl_k400.py --workdir=runs/vivit_k400 \
    --config.dataset.data_dir=/data/kinetics400 --config.init_from.path=/ckpt/vit_b16_imagenet21k.npz

data_dir holds train/ and validation/ as one folder per class (<class>/<clip>.mp4) or as train.csv /
validation.csv lists (path,label[,start,end]); see data/video.py. init_from.path is a 2D ViT-B/16
(ours, a vit_jax / big_vision .npz or a timm .safetensors), its patch kernel inflated to the tubelets
by central-frame initialisation (--config.init_from.inflate=filter for the other). Without Kinetics the
run stops with the expected layout. Not trained here (no Kinetics, no accelerator); smoke test on CPU:
  python main.py --config=configs/vivit_b16x2_tl_k400.py --workdir=/tmp/k400 --config.dataset.name=synthetic \
    --config.batch_size=2 --config.eval_batch_size=2 --config.num_train_steps=1 \
    --config.dataset.synthetic_eval_size=2 --config.dataset.num_frames=4 --config.dataset.image_size=64
"""

from tokenlearner_jax import config_lib


def get_config(arg=None):
    del arg
    return config_lib.kinetics_vivit_config(400)
