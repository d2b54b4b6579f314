"""ViViT from published 2D ViT weights: the ViT maps (tools/weights/vit.py) give the 2D tree, and
train/init_from.py inflates its patch kernel into the tubelet kernel (train/inflate.py)."""

from tokenlearner_jax.tools.weights.vit import from_npz, from_safetensors  # noqa: F401
