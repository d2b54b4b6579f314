"""ViViT from published 2D ViT weights: the ViT maps (weights/vit.py) give the 2D tree, and
weights/init_from.py inflates its patch kernel into the tubelet kernel (weights/inflate.py)."""

from tokenlearner_jax.weights.vit import from_npz, from_safetensors  # noqa: F401
