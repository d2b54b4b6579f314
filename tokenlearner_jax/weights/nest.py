"""timm's NesT checkpoints (safetensors: nest_tiny_jx, nest_small_jx, nest_base_jx and nest_*) into
`models/nest.py`'s tree, and back (`to_safetensors`, the exact inverse).

timm (1.0.x, `timm/models/nest.py`) names: `patch_embed.proj`, `levels.{i}.pos_embed` `[1, blocks,
S*S, width]` (the same layout as ours), `levels.{i}.pool.{conv, norm}` (i > 0: the aggregation before
level i), `levels.{i}.transformer_encoder.{j}.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}`,
`norm`, `head`. Layouts: conv kernels `[out, in, kh, kw]` -> `[kh, kw, in, out]`; Linear `[out, in]` ->
Dense `[in, out]`; `attn.qkv` `[3 * width, width]` splits as (q|k|v, head, head_dim) into the
`[width, heads, head_dim]` query / key / value kernels. timm flattens the attention output channel-major
(index head_dim_index * heads + head; the official Flax code and ours are head-major), so `attn.proj`'s
input axis is read as (head_dim, heads).

The weights ported from the official code (nest_*_jx) need `pool_padding='same'` (our default); timm's
own nest_* models pad the max pool symmetrically: `--config.model.pool_padding=symmetric`. timm's NesT
has no multi-query attention (the CIFAR variants). Parameters of ours that timm lacks (TokenLearner)
start fresh where `config.init_from.fresh_if_missing` allows it.
"""

import jax.numpy as jnp

from tokenlearner_jax import models
from tokenlearner_jax.models import nest
from tokenlearner_jax.weights import TensorTaker

SOURCE = "timm NesT safetensors"


def from_safetensors(tensors: dict, model_config) -> dict:
    """timm Nest state dict -> {'params': ...} for `models/nest.py`, for the levels and layers of
    `model_config` (config_lib.nest_model); a tensor without a place, or a place without a tensor,
    raises ValueError naming it. Shapes are checked against the model by the caller (init_from.reconcile)."""
    arch = nest.resolve_architecture(model_config)
    if arch["num_kv_heads"]:
        raise ValueError(f"{SOURCE}: timm's NesT has no multi-query attention, but config.model.num_kv_heads="
                         f"{arch['num_kv_heads']} (variant {model_config.variant!r}); use a 224 variant or "
                         f"--config.model.num_kv_heads=0")
    take = TensorTaker(tensors, source=SOURCE)

    def dense(prefix):
        return {"kernel": take(f"{prefix}.weight").T, "bias": take(f"{prefix}.bias")}

    def norm(prefix):
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    def conv(prefix):
        return {"kernel": take(f"{prefix}.weight").transpose(2, 3, 1, 0), "bias": take(f"{prefix}.bias")}

    def attention(prefix, width, heads):
        head_dim = width // heads
        qkv_kernel = take(f"{prefix}.qkv.weight").reshape(3, heads, head_dim, width).transpose(0, 3, 1, 2)
        qkv_bias = take(f"{prefix}.qkv.bias").reshape(3, heads, head_dim)
        out = take(f"{prefix}.proj.weight").T.reshape(head_dim, heads, width).transpose(1, 0, 2)
        params = {name: {"kernel": qkv_kernel[k], "bias": qkv_bias[k]}
                  for k, name in enumerate(("query", "key", "value"))}
        params["out"] = {"kernel": out, "bias": take(f"{prefix}.proj.bias")}
        return params

    params = {"patch_embedding": {"embedding": conv("patch_embed.proj")}}
    for i, (width, heads, depth) in enumerate(zip(arch["dims"], arch["num_heads"], arch["depths"])):
        level = {"pos_embedding": take(f"levels.{i}.pos_embed")}
        if i:
            level["aggregation_conv"] = conv(f"levels.{i}.pool.conv")
            level["aggregation_norm"] = norm(f"levels.{i}.pool.norm")
        for j in range(depth):
            layer = f"levels.{i}.transformer_encoder.{j}"
            level[f"encoderblock_{j}"] = {
                "LayerNorm_0": norm(f"{layer}.norm1"),
                "MultiHeadDotProductAttention_1": attention(f"{layer}.attn", width, heads),
                "LayerNorm_2": norm(f"{layer}.norm2"),
                "MlpBlock_3": {"Dense_0": dense(f"{layer}.mlp.fc1"), "Dense_1": dense(f"{layer}.mlp.fc2")},
            }
        params[f"level_{i}"] = level
    params["head_norm"] = norm("norm")
    if "head.weight" in take:
        params["head"] = dense("head")
    take.check_all_used()
    return {"params": params}


# ---------------------------------------------------------------------------------------------- export

_TIMM_SIZES = {"T": "tiny", "S": "small", "B": "base"}


def _check_timm_compatible(model_config) -> dict:
    """The resolved architecture, or ValueError naming the field timm's NesT cannot reproduce."""
    arch = nest.resolve_architecture(model_config)
    if arch["num_kv_heads"]:
        raise ValueError(f"config.model.num_kv_heads={arch['num_kv_heads']} (variant {model_config.variant!r}): "
                         f"timm's NesT has no multi-query attention; export with --format=ours")
    if models.build(model_config).token_learner is not None:
        raise ValueError("config.model.token_learner.enabled=True: timm's NesT has no TokenLearner; export with "
                         "--format=ours")
    return arch


def to_safetensors(variables: dict, model_config) -> dict:
    """{'params': ...} of `models/nest.py` -> timm Nest state dict {name: array}, the inverse of
    `from_safetensors` (attn.proj's input axis written channel-major, as timm reads it)."""
    arch = _check_timm_compatible(model_config)
    params, out = variables["params"], {}

    def dense(prefix, p):
        out.update({f"{prefix}.weight": p["kernel"].T, f"{prefix}.bias": p["bias"]})

    def norm(prefix, p):
        out.update({f"{prefix}.weight": p["scale"], f"{prefix}.bias": p["bias"]})

    def conv(prefix, p):
        out.update({f"{prefix}.weight": p["kernel"].transpose(3, 2, 0, 1), f"{prefix}.bias": p["bias"]})

    def attention(prefix, p, width):
        # query / key / value kernels [width, heads, head_dim] -> qkv [(q|k|v, head, head_dim), width]
        qkv = jnp.stack([p[name]["kernel"] for name in ("query", "key", "value")]).transpose(0, 2, 3, 1)
        out[f"{prefix}.qkv.weight"] = qkv.reshape(3 * width, width)
        out[f"{prefix}.qkv.bias"] = jnp.stack([p[name]["bias"] for name in ("query", "key", "value")]).reshape(-1)
        # out kernel [heads, head_dim, width] -> proj [width, (head_dim, heads)]
        out[f"{prefix}.proj.weight"] = p["out"]["kernel"].transpose(1, 0, 2).reshape(width, width).T
        out[f"{prefix}.proj.bias"] = p["out"]["bias"]

    conv("patch_embed.proj", params["patch_embedding"]["embedding"])
    for i, (width, depth) in enumerate(zip(arch["dims"], arch["depths"])):
        level = params[f"level_{i}"]
        out[f"levels.{i}.pos_embed"] = level["pos_embedding"]
        if i:
            conv(f"levels.{i}.pool.conv", level["aggregation_conv"])
            norm(f"levels.{i}.pool.norm", level["aggregation_norm"])
        for j in range(depth):
            block, prefix = level[f"encoderblock_{j}"], f"levels.{i}.transformer_encoder.{j}"
            norm(f"{prefix}.norm1", block["LayerNorm_0"])
            attention(f"{prefix}.attn", block["MultiHeadDotProductAttention_1"], width)
            norm(f"{prefix}.norm2", block["LayerNorm_2"])
            dense(f"{prefix}.mlp.fc1", block["MlpBlock_3"]["Dense_0"])
            dense(f"{prefix}.mlp.fc2", block["MlpBlock_3"]["Dense_1"])
    norm("norm", params["head_norm"])
    if "head" in params:
        dense("head", params["head"])
    return out


def timm_model(model_config, image_size: int) -> tuple:
    """How timm builds this model at `image_size`: (registered model name, keyword arguments for
    `timm.create_model`) when the widths, heads and depths are a variant's (nest_<size>_jx for 'same'
    pooling, nest_<size> for 'symmetric'); otherwise ('timm.models.nest.Nest', its keyword arguments),
    since the registered entry points fix those."""
    arch = _check_timm_compatible(model_config)
    pad_type = "same" if model_config.pool_padding == "same" else ""
    kwargs = dict(img_size=image_size, patch_size=arch["patch_size"], num_levels=len(arch["depths"]),
                  mlp_ratio=float(model_config.mlp_ratio), num_classes=model_config.num_classes)
    variant_dims, variant_heads, variant_depths = nest.VARIANTS[model_config.variant][:3]
    if model_config.variant in _TIMM_SIZES and (arch["dims"], arch["num_heads"], arch["depths"]) == (
            variant_dims, variant_heads, variant_depths):
        suffix = "_jx" if pad_type else ""
        return f"nest_{_TIMM_SIZES[model_config.variant]}{suffix}", kwargs
    return "timm.models.nest.Nest", dict(embed_dims=arch["dims"], num_heads=arch["num_heads"],
                                         depths=arch["depths"], pad_type=pad_type, **kwargs)
