"""Writes the ViT conversion fixtures under tests/fixtures/ from timm, the reference implementation.

  /work/timm-venv/bin/python experiments/make_vit_fixtures.py      (a venv with torch, timm, safetensors)

Run once; the tests then need neither torch nor timm. Two tiny timm ViTs (width 32, depth 2, 2 heads,
MLP 64, patch 4, 16x16 inputs, 5 classes) with every parameter randomised so that no weight is at a
trivial value:
  vit_tiny_token.safetensors        class-token model, timm's own state dict
  vit_tiny_token_vitjax.npz         the same weights in the vit_jax .npz layout
  vit_tiny_gap_bigvision.npz        a GAP model (no class token, LayerNorm before the mean, no fc_norm)
                                    in the big_vision layout: 'params/' prefix, scanned encoder
  vit_tiny_io.npz                   images [2, 16, 16, 3] (NHWC) and both models' timm logits [2, 5]
  vit_b16_keys.json                 names and shapes of a full-size ViT-B/16 in both layouts
Each .npz is checked by loading it back with timm's own npz loader (`_load_weights`) into a fresh
model, which must reproduce the logits (tiny models) or the state dict (B/16).
"""

import json
import os
import tempfile

import numpy as np
import safetensors.numpy
import timm
import torch
from timm.models import vision_transformer

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")
TINY = dict(img_size=16, patch_size=4, num_classes=5, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0)


def randomise(model: torch.nn.Module, seed: int):
    """Every parameter to a random value: weights N(0, 0.2^2), norm scales 1 + N(0, 0.1^2)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            is_norm_scale = name.endswith(".weight") and p.ndim == 1
            p.copy_(1.0 + 0.1 * noise if is_norm_scale else 0.2 * noise)


def state_dict_numpy(model) -> dict:
    return {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}


def to_npz_layout(sd: dict, num_heads: int, *, big_vision: bool) -> dict:
    """timm state dict -> vit_jax names (or big_vision names: 'params/' prefix, _0/_1 submodules, scanned
    encoder, top-level pos_embedding without a class-token row)."""
    width = sd["patch_embed.proj.weight"].shape[0]
    head_dim = width // num_heads
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    mha, norm2, mlp = ("MultiHeadDotProductAttention_0", "LayerNorm_1", "MlpBlock_0") if big_vision else \
        ("MultiHeadDotProductAttention_1", "LayerNorm_2", "MlpBlock_3")
    out = {"embedding/kernel": sd["patch_embed.proj.weight"].transpose(2, 3, 1, 0),
           "embedding/bias": sd["patch_embed.proj.bias"],
           "Transformer/encoder_norm/scale": sd["norm.weight"],
           "Transformer/encoder_norm/bias": sd["norm.bias"],
           "head/kernel": sd["head.weight"].T, "head/bias": sd["head.bias"]}
    if "cls_token" in sd:
        out["cls"] = sd["cls_token"]
    if big_vision:
        assert "cls_token" not in sd, "big_vision keeps no class-token position row: use a GAP model"
        out["pos_embedding"] = sd["pos_embed"]
    else:
        out["Transformer/posembed_input/pos_embedding"] = sd["pos_embed"]
    blocks = []
    for i in range(depth):
        p = f"blocks.{i}."
        block = {"LayerNorm_0/scale": sd[p + "norm1.weight"], "LayerNorm_0/bias": sd[p + "norm1.bias"],
                 f"{norm2}/scale": sd[p + "norm2.weight"], f"{norm2}/bias": sd[p + "norm2.bias"],
                 f"{mha}/out/kernel": sd[p + "attn.proj.weight"].T.reshape(num_heads, head_dim, width),
                 f"{mha}/out/bias": sd[p + "attn.proj.bias"]}
        for j, name in enumerate(("query", "key", "value")):
            rows = slice(j * width, (j + 1) * width)
            kernel = sd[p + "attn.qkv.weight"][rows].T
            block[f"{mha}/{name}/kernel"] = kernel.reshape(width, num_heads, head_dim)
            block[f"{mha}/{name}/bias"] = sd[p + "attn.qkv.bias"][rows].reshape(num_heads, head_dim)
        for j in range(2):
            block[f"{mlp}/Dense_{j}/kernel"] = sd[p + f"mlp.fc{j + 1}.weight"].T
            block[f"{mlp}/Dense_{j}/bias"] = sd[p + f"mlp.fc{j + 1}.bias"]
        blocks.append(block)
    if big_vision:
        out.update({f"Transformer/encoderblock/{k}": np.stack([b[k] for b in blocks]) for k in blocks[0]})
        return {f"params/{k}": np.ascontiguousarray(v) for k, v in out.items()}
    for i, block in enumerate(blocks):
        out.update({f"Transformer/encoderblock_{i}/{k}": v for k, v in block.items()})
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def timm_logits(model, images_nhwc: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(images_nhwc).permute(0, 3, 1, 2)).numpy()


def load_with_timm(factory, arrays: dict) -> torch.nn.Module:
    """A fresh timm model with `arrays` (.npz names) loaded by timm's own npz loader."""
    model = factory().eval()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "weights.npz")
        np.savez(path, **arrays)
        vision_transformer._load_weights(model, path)
    return model


def shapes(arrays: dict) -> dict:
    return {k: list(v.shape) for k, v in sorted(arrays.items())}


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    images = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype(np.float32)

    def token_model():
        return vision_transformer.VisionTransformer(global_pool="token", **TINY)

    def gap_model():
        return vision_transformer.VisionTransformer(global_pool="avg", class_token=False, fc_norm=False, **TINY)

    token = token_model().eval()
    randomise(token, seed=1)
    gap = gap_model().eval()
    randomise(gap, seed=2)
    logits_token, logits_gap = timm_logits(token, images), timm_logits(gap, images)

    token_sd = state_dict_numpy(token)
    safetensors.numpy.save_file(token_sd, os.path.join(OUT, "vit_tiny_token.safetensors"))
    vitjax = to_npz_layout(token_sd, TINY["num_heads"], big_vision=False)
    bigvision = to_npz_layout(state_dict_numpy(gap), TINY["num_heads"], big_vision=True)
    np.testing.assert_allclose(timm_logits(load_with_timm(token_model, vitjax), images), logits_token,
                               atol=1e-6)
    np.testing.assert_allclose(timm_logits(load_with_timm(gap_model, bigvision), images), logits_gap, atol=1e-6)
    np.savez(os.path.join(OUT, "vit_tiny_token_vitjax.npz"), **vitjax)
    np.savez(os.path.join(OUT, "vit_tiny_gap_bigvision.npz"), **bigvision)
    np.savez(os.path.join(OUT, "vit_tiny_io.npz"), images=images, logits_token=logits_token,
             logits_gap=logits_gap)

    b16 = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    b16_sd = state_dict_numpy(b16)
    b16_npz = to_npz_layout(b16_sd, 12, big_vision=False)
    reloaded = state_dict_numpy(load_with_timm(lambda: timm.create_model("vit_base_patch16_224"), b16_npz))
    for name, value in b16_sd.items():
        np.testing.assert_array_equal(reloaded[name], value, err_msg=name)
    with open(os.path.join(OUT, "vit_b16_keys.json"), "w", encoding="utf-8") as f:
        json.dump({"timm_model": "vit_base_patch16_224", "timm_version": timm.__version__,
                   "safetensors": shapes(b16_sd), "npz": shapes(b16_npz)}, f, indent=1)
    print("token logits", logits_token, "\ngap logits", logits_gap)
    for name in sorted(n for n in os.listdir(OUT) if n.startswith("vit_")):
        print(f"{name}: {os.path.getsize(os.path.join(OUT, name))} bytes")


if __name__ == "__main__":
    main()
