"""Writes the NesT conversion fixtures under tests/fixtures/ from timm, the reference implementation.

  /work/timm-venv/bin/python experiments/make_nest_fixtures.py      (a venv with torch, timm, safetensors)

Run once; the tests then need neither torch nor timm. A tiny NesT built with timm's own `Nest` class
and the keyword arguments of timm's nest_tiny_jx (qkv bias, MLP ratio 4, timm's LayerNorm eps 1e-6,
GELU), but smaller: 32x32 input, patch 2 (a 16x16 grid), three levels with widths (8, 16, 24), heads
(2, 2, 4), depths (1, 1, 2), 5 classes (block side 4: 16, 4 and 1 blocks). timm's Nest only takes
square inputs. Every parameter is randomised (norm scales around 1, position embeddings and biases
too), and the same weights are run with both of timm's max-pool paddings:
  nest_tiny.safetensors     timm's state dict, as timm publishes checkpoints
  nest_tiny_io.npz          images [2, 32, 32, 3] (NHWC); timm's logits [2, 5] with pad_type='same'
                            (nest_*_jx, `logits_same`) and pad_type='' (nest_*, `logits_symmetric`);
                            the architecture (patch_size, dims, num_heads, depths)
  nest_keys.json            names and shapes of timm's full-size nest_tiny_jx, nest_small_jx and
                            nest_base_jx state dicts
"""

import json
import os

import numpy as np
import safetensors.numpy
import timm
import torch
from timm.models import nest

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
ARCH = dict(img_size=32, patch_size=2, num_levels=3, embed_dims=(8, 16, 24), num_heads=(2, 2, 4),
            depths=(1, 1, 2), num_classes=5)


def tiny_nest(pad_type: str) -> nest.Nest:
    return nest.Nest(pad_type=pad_type, **ARCH)


def randomise(model: torch.nn.Module, seed: int):
    """Every parameter to a random value: weights, biases and position embeddings N(0, 0.2^2) (0.5 for
    the patch embedding, so that the tiny model's logits are not trivial), LayerNorm scales 1 + N(0, 0.2^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_norm_scale = p.ndim == 1 and name.endswith(".weight") and "norm" in name
            scale = 0.5 if name.startswith("patch_embed") else 0.2
            p.copy_(1.0 + 0.2 * noise if is_norm_scale else scale * noise)


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    model = tiny_nest("same").eval()
    randomise(model, seed=1)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(state, os.path.join(OUT, "nest_tiny.safetensors"))

    images = np.random.RandomState(2).randn(2, 32, 32, 3).astype(np.float32)
    logits = {}
    for pad_type, key in (("same", "logits_same"), ("", "logits_symmetric")):
        m = tiny_nest(pad_type).eval()
        m.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        with torch.no_grad():
            logits[key] = m(torch.from_numpy(images).permute(0, 3, 1, 2)).numpy()
    np.savez(os.path.join(OUT, "nest_tiny_io.npz"), images=images, **logits,
             patch_size=np.array(ARCH["patch_size"]), dims=np.array(ARCH["embed_dims"]),
             num_heads=np.array(ARCH["num_heads"]), depths=np.array(ARCH["depths"]))

    keys = {}
    for name in ("nest_tiny_jx", "nest_small_jx", "nest_base_jx"):
        full = timm.create_model(name, pretrained=False)
        keys[name] = {k: list(v.shape) for k, v in full.state_dict().items()}
    with open(os.path.join(OUT, "nest_keys.json"), "w", encoding="utf-8") as f:
        json.dump({"timm_version": timm.__version__, "models": keys}, f, separators=(",", ":"))
    print(f"timm {timm.__version__}: {len(state)} tiny tensors; logits same {logits['logits_same'].round(4).tolist()}, "
          f"symmetric {logits['logits_symmetric'].round(4).tolist()}; full-size key lists "
          f"{ {k: len(v) for k, v in keys.items()} } -> {OUT}")


if __name__ == "__main__":
    main()
