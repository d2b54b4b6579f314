"""ViT weights from timm (safetensors) and from vit_jax / big_vision (.npz) into `models/vit.py`'s tree.

Our layout is vit_jax's: query/key/value kernels `[width, heads, head_dim]`, out kernel
`[heads, head_dim, width]`, patch-embedding kernel `[ph, pw, channels, width]`, Dense kernels `[in, out]`.

timm (torch layout): Linear weights are `[out, in]` (transposed here), the patch conv is
`[width, channels, ph, pw]`, and attention keeps q, k, v in one fused `qkv` Linear `[3 * width, width]`
(split here). `pos_embed` includes the class-token row unless the model was built with
`no_embed_class`; `weights/init_from.py` reconciles either with the target.

npz: vit_jax checkpoints name blocks `Transformer/encoderblock_{i}/{LayerNorm_0, MultiHeadDotProductAttention_1,
LayerNorm_2, MlpBlock_3}` and keep the position embedding (class-token row first) under
`Transformer/posembed_input`; big_vision checkpoints prefix names with `params/`, use
`MultiHeadDotProductAttention_0`, `LayerNorm_1`, `MlpBlock_0`, keep `pos_embedding` at the top
without a class-token row, and may stack all blocks along a leading axis (`Transformer/encoderblock/`,
a scanned encoder). All are accepted. Names outside the parameter prefix (optimizer state) are ignored.
"""

import logging
import re

from tokenlearner_jax import models
from tokenlearner_jax.weights import TensorTaker

NPZ_PREFIXES = ("", "opt/target/", "params/", "params/img/")


def _block_indices(names, pattern: str, source: str) -> list:
    """Sorted block indices found by `pattern` (one group); they must be 0..n-1."""
    indices = sorted({int(m.group(1)) for name in names if (m := re.match(pattern, name))})
    if indices != list(range(len(indices))):
        raise ValueError(f"{source}: encoder blocks {indices} are not numbered 0..{len(indices) - 1}")
    return indices


def _dense(kernel, bias) -> dict:
    return {"kernel": kernel, "bias": bias}


def _layer_norm(scale, bias) -> dict:
    return {"scale": scale, "bias": bias}


def from_safetensors(tensors: dict, model_config) -> dict:
    """timm `VisionTransformer` state dict (class token or not, no register tokens, no layer scale, no
    fc_norm) -> {'params': ...} for `models/vit.py`. `model_config` gives the number of heads."""
    num_heads = models.build(model_config).num_heads
    take = TensorTaker(tensors, source="timm ViT safetensors")
    width = take("patch_embed.proj.weight").shape[0]
    if width % num_heads:
        raise ValueError(f"timm ViT safetensors: width {width} is not divisible by "
                         f"config.model num_heads={num_heads}")
    head_dim = width // num_heads

    def linear(prefix):  # torch [out, in] -> [in, out]
        return _dense(take(f"{prefix}.weight").T, take(f"{prefix}.bias"))

    def norm(prefix):
        return _layer_norm(take(f"{prefix}.weight"), take(f"{prefix}.bias"))

    params = {
        "stem": {"embedding": _dense(take("patch_embed.proj.weight").transpose(2, 3, 1, 0),
                                     take("patch_embed.proj.bias"))},
        "posembed_input": {"pos_embedding": take("pos_embed")},
    }
    if "cls_token" in take:
        params["cls"] = take("cls_token")
    for i in _block_indices(tensors, r"blocks\.(\d+)\.", take.source):
        prefix = f"blocks.{i}"
        qkv_weight, qkv_bias = take(f"{prefix}.attn.qkv.weight"), take(f"{prefix}.attn.qkv.bias")
        attention = {}
        for j, name in enumerate(("query", "key", "value")):
            kernel = qkv_weight[j * width:(j + 1) * width].T.reshape(width, num_heads, head_dim)
            attention[name] = _dense(kernel, qkv_bias[j * width:(j + 1) * width].reshape(num_heads, head_dim))
        attention["out"] = _dense(take(f"{prefix}.attn.proj.weight").T.reshape(num_heads, head_dim, width),
                                  take(f"{prefix}.attn.proj.bias"))
        params[f"encoderblock_{i}"] = {
            "LayerNorm_0": norm(f"{prefix}.norm1"),
            "MultiHeadDotProductAttention_1": attention,
            "LayerNorm_2": norm(f"{prefix}.norm2"),
            "MlpBlock_3": {"Dense_0": linear(f"{prefix}.mlp.fc1"), "Dense_1": linear(f"{prefix}.mlp.fc2")},
        }
    params["encoder_norm"] = norm("norm")
    if "head.weight" in take:
        params["head"] = linear("head")
    take.check_all_used()
    return {"params": params}


def _npz_prefix(arrays: dict) -> str:
    for prefix in NPZ_PREFIXES:
        if f"{prefix}embedding/kernel" in arrays:
            return prefix
    raise ValueError(f"ViT npz: no 'embedding/kernel' under any of the prefixes {NPZ_PREFIXES}: not a vit_jax "
                     f"or big_vision ViT checkpoint (first names: {sorted(arrays)[:5]})")


def _first_present(take: TensorTaker, *names: str) -> str:
    for name in names:
        if name in take:
            return name
    raise ValueError(f"{take.source}: none of {[take.prefix + n for n in names]} is present")


def _submodule(take: TensorTaker, block: str, suffix: str, *candidates: str) -> str:
    """Which of the candidate submodule names (vit_jax's first, big_vision's second) `block` uses."""
    return _first_present(take, *(f"{block}{c}/{suffix}" for c in candidates))[len(block):].split("/")[0]


def from_npz(arrays: dict, model_config) -> dict:
    """vit_jax or big_vision ViT checkpoint (names as in an .npz file) -> {'params': ...}.

    Our kernels share vit_jax's layout, so nothing is transposed; a scanned big_vision encoder is
    split into blocks. `model_config` is unused (the layout fixes every shape)."""
    del model_config
    prefix = _npz_prefix(arrays)
    ignored = [name for name in arrays if not name.startswith(prefix)]
    if ignored:
        logging.info("ViT npz: ignoring %d arrays outside the parameter prefix %r (e.g. %s)", len(ignored),
                     prefix, ignored[0])
    take = TensorTaker({k: v for k, v in arrays.items() if k.startswith(prefix)}, source="ViT npz",
                       prefix=prefix)
    posemb = _first_present(take, "Transformer/posembed_input/pos_embedding", "pos_embedding")
    params = {
        "stem": {"embedding": _dense(take("embedding/kernel"), take("embedding/bias"))},
        "posembed_input": {"pos_embedding": take(posemb)},
    }
    if "cls" in take:
        params["cls"] = take("cls")

    scanned = "Transformer/encoderblock/LayerNorm_0/scale" in take
    if scanned:
        depth = take("Transformer/encoderblock/LayerNorm_0/scale").shape[0]
        blocks = [("Transformer/encoderblock/", i) for i in range(depth)]
    else:
        names = [name[len(prefix):] for name in take.tensors]
        blocks = [(f"Transformer/encoderblock_{i}/", None)
                  for i in _block_indices(names, r"Transformer/encoderblock_(\d+)/", take.source)]
    for i, (block, layer) in enumerate(blocks):
        def get(name, block=block, layer=layer):
            value = take(block + name)
            return value if layer is None else value[layer]

        mha = _submodule(take, block, "query/kernel", "MultiHeadDotProductAttention_1",
                         "MultiHeadDotProductAttention_0")
        norm2 = _submodule(take, block, "scale", "LayerNorm_2", "LayerNorm_1")
        mlp = _submodule(take, block, "Dense_0/kernel", "MlpBlock_3", "MlpBlock_0")
        params[f"encoderblock_{i}"] = {
            "LayerNorm_0": _layer_norm(get("LayerNorm_0/scale"), get("LayerNorm_0/bias")),
            "MultiHeadDotProductAttention_1": {
                name: _dense(get(f"{mha}/{name}/kernel"), get(f"{mha}/{name}/bias"))
                for name in ("query", "key", "value", "out")},
            "LayerNorm_2": _layer_norm(get(f"{norm2}/scale"), get(f"{norm2}/bias")),
            "MlpBlock_3": {name: _dense(get(f"{mlp}/{name}/kernel"), get(f"{mlp}/{name}/bias"))
                           for name in ("Dense_0", "Dense_1")},
        }
    params["encoder_norm"] = _layer_norm(take("Transformer/encoder_norm/scale"),
                                         take("Transformer/encoder_norm/bias"))
    for name in ("pre_logits", "head"):
        if f"{name}/kernel" in take:
            params[name] = _dense(take(f"{name}/kernel"), take(f"{name}/bias"))
    take.check_all_used()
    return {"params": params}
