"""Writes the MaxViT conversion fixtures under tests/fixtures/ from timm, the reference implementation.

  /work/timm-venv/bin/python experiments/make_maxvit_fixtures.py      (a venv with torch, timm, safetensors)

Run once; the tests then need neither torch nor timm. A tiny MaxViT built with timm's own `MaxxVit`
class and exactly the settings of timm's `maxvit_*_tf` models (`_tf_cfg`: BatchNorm eps 1e-3, 'same'
padding, tanh GELU, interleaved qkv, the TF relative bias, pre-logits head with tanh), but smaller:
stem (8, 8), dims (8, 16, 24, 32), depths (1, 2, 1, 1), head size 8, 5 classes. The input is
96 x 192 (non-square; window and grid 3 = height / 32, set explicitly since timm would take 192 / 32
across; maps 48x96, 24x48, 12x24, 6x12, 3x6), so both partitions, the 'same' padding of the strided
convolutions, the pooled shortcuts (with and without the 1x1 conv: stage 0 keeps the stem's width) and
the bias lookup over a 5x5 table are exercised.
Every parameter is randomised (norm scales around 1, relative bias tables N(0, 0.5^2) so that they
matter) and so are the BatchNorm running statistics, which eval mode uses.
  maxvit_tiny.safetensors      timm's state dict (running stats and num_batches_tracked included)
  maxvit_tiny_io.npz           images [2, 96, 192, 3] (NHWC, float16 values); timm's eval-mode logits
                               [2, 5]; timm's train-mode logits on the same images (BatchNorm on batch
                               statistics) and
                               the stem BatchNorm's running mean / var after that step, with timm's BN
                               momentum set to 0.01 (= TF's and our 0.99)
  maxvit_tiny_tf_224_keys.json names and shapes of timm's full-size maxvit_tiny_tf_224 state dict
  maxvit_tiny_tf_384_keys.json the same for maxvit_tiny_tf_384 (window 12: 23x23 bias tables)
"""

import copy
import json
import os

import numpy as np
import safetensors.numpy
import timm
import torch
from timm.models import maxxvit

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
STEM, DIMS, DEPTHS, HEAD_DIM, NUM_CLASSES = (8, 8), (8, 16, 24, 32), (1, 2, 1, 1), 8, 5
IMAGE_HW = (96, 192)


def tiny_maxvit() -> maxxvit.MaxxVit:
    """timm's maxvit_*_tf recipe (maxxvit.model_cfgs['maxvit_tiny_tf']) at a small width and depth."""
    tf_cfg = maxxvit._tf_cfg()  # pylint: disable=protected-access
    cfg = maxxvit.MaxxVitCfg(
        embed_dim=DIMS, depths=DEPTHS, block_type=("M",) * 4, stem_width=STEM, stem_bias=True,
        head_hidden_size=DIMS[-1], conv_cfg=tf_cfg["conv_cfg"],
        transformer_cfg=maxxvit.MaxxVitTransformerCfg(**{**tf_cfg["transformer_cfg"].__dict__, "dim_head": HEAD_DIM,
                                                         "window_size": (3, 3), "grid_size": (3, 3)}))
    return maxxvit.MaxxVit(cfg, img_size=IMAGE_HW, num_classes=NUM_CLASSES)


def randomise(model: torch.nn.Module, seed: int):
    """Kernels and biases N(0, 0.2^2); norm scales 1 + N(0, 0.2^2); relative bias tables N(0, 0.5^2);
    BatchNorm running means N(0, 0.2^2) and variances U(0.5, 1.5)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if name.endswith("relative_position_bias_table"):
                p.copy_(0.5 * noise)
            elif p.ndim == 1 and name.endswith(".weight") and "norm" in name:
                p.copy_(1.0 + 0.2 * noise)
            else:
                p.copy_(0.2 * noise)
        for name, buffer in model.named_buffers():
            if name.endswith("running_mean"):
                buffer.copy_(0.2 * torch.randn(buffer.shape, generator=generator))
            elif name.endswith("running_var"):
                buffer.copy_(0.5 + torch.rand(buffer.shape, generator=generator))


def key_list(name: str) -> dict:
    full = timm.create_model(name, pretrained=False)
    return {"timm_version": timm.__version__, "tensors": {k: list(v.shape) for k, v in full.state_dict().items()}}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    model = tiny_maxvit().eval()
    randomise(model, seed=1)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    safetensors.numpy.save_file(state, os.path.join(OUT, "maxvit_tiny.safetensors"))

    # float16 values (stored as such to keep the file small), computed on in float32 by both sides
    images = np.random.RandomState(2).randn(2, *IMAGE_HW, 3).astype(np.float16)
    nchw = torch.from_numpy(images.astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        logits = model(nchw).numpy()
        train_model = copy.deepcopy(model).train()
        for module in train_model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.momentum = 0.01
        train_logits = train_model(nchw).numpy()
    stem_norm = train_model.stem.norm1
    np.savez(os.path.join(OUT, "maxvit_tiny_io.npz"), images=images, logits=logits, train_logits=train_logits,
             stem_running_mean=stem_norm.running_mean.numpy(), stem_running_var=stem_norm.running_var.numpy(),
             stem_widths=np.array(STEM), dims=np.array(DIMS), depths=np.array(DEPTHS), head_dim=HEAD_DIM)

    for name in ("maxvit_tiny_tf_224", "maxvit_tiny_tf_384"):
        with open(os.path.join(OUT, f"{name}_keys.json"), "w", encoding="utf-8") as f:
            json.dump(key_list(name), f, indent=0)
    print(f"timm {timm.__version__}: {len(state)} tiny tensors, logits {logits.round(4).tolist()}, "
          f"train-mode logits {train_logits.round(4).tolist()} -> {OUT}")


if __name__ == "__main__":
    main()
