"""Writes the PoolFormer conversion fixtures under tests/fixtures/ from timm, the reference implementation.

  /work/timm-venv/bin/python experiments/make_poolformer_fixtures.py      (a venv with torch, timm, safetensors)

Run once; the tests then need neither torch nor timm. A tiny PoolFormer built with timm's own
`MetaFormer` class and exactly the keyword arguments of timm's `poolformer_s12` (no norm in stem and
downsampling, GroupNorm1, exact GELU, MLP biases, layer scales, linear head), but smaller: depths
(1, 2, 1, 1), dims (8, 16, 24, 32), 5 classes. Every parameter is randomised (layer scales too, so
that they matter), and the input is non-square (72 x 56, grids 18x14, 9x7, 5x4, 3x2) so that the
pooling borders, the strided convolutions' padding and the head are all exercised.
  poolformer_tiny.safetensors      timm's state dict, as timm publishes checkpoints
  poolformer_tiny_io.npz           images [2, 72, 56, 3] (NHWC), timm's logits [2, 5], and the
                                   architecture (depths, dims)
  poolformer_s12_keys.json         names and shapes of timm's full-size poolformer_s12 state dict
"""

import json
import os

import numpy as np
import safetensors.numpy
import timm
import torch
from timm.layers import GroupNorm1
from timm.models import metaformer

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
DEPTHS, DIMS, NUM_CLASSES = (1, 2, 1, 1), (8, 16, 24, 32), 5
IMAGE_HW = (72, 56)


def tiny_poolformer() -> metaformer.MetaFormer:
    """timm's poolformer_s12 recipe (timm/models/metaformer.py) at a small width and depth."""
    return metaformer.MetaFormer(depths=DEPTHS, dims=DIMS, num_classes=NUM_CLASSES, downsample_norm=None,
                                 mlp_act=torch.nn.GELU, mlp_bias=True, norm_layers=GroupNorm1,
                                 layer_scale_init_values=1e-5, res_scale_init_values=None, use_mlp_head=False)


def randomise(model: torch.nn.Module, seed: int):
    """Every parameter to a random value: kernels and biases N(0, 0.2^2), norm scales and layer scales
    1 + N(0, 0.2^2), so that neither is at its trivial initial value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_scale = p.ndim == 1 and (name.endswith(".scale") or (name.endswith(".weight") and "norm" in name))
            p.copy_(1.0 + 0.2 * noise if is_scale else 0.2 * noise)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    model = tiny_poolformer().eval()
    randomise(model, seed=1)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(state, os.path.join(OUT, "poolformer_tiny.safetensors"))

    images = np.random.RandomState(2).randn(2, *IMAGE_HW, 3).astype(np.float32)
    with torch.no_grad():
        logits = model(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.savez(os.path.join(OUT, "poolformer_tiny_io.npz"), images=images, logits=logits,
             depths=np.array(DEPTHS), dims=np.array(DIMS))

    full = timm.create_model("poolformer_s12", pretrained=False)
    keys = {k: list(v.shape) for k, v in full.state_dict().items()}
    with open(os.path.join(OUT, "poolformer_s12_keys.json"), "w", encoding="utf-8") as f:
        json.dump({"timm_version": timm.__version__, "tensors": keys}, f, indent=0)
    print(f"timm {timm.__version__}: {len(state)} tiny tensors, logits {logits.round(4).tolist()}, "
          f"{len(keys)} poolformer_s12 tensors -> {OUT}")


if __name__ == "__main__":
    main()
