"""ViT weights from timm (safetensors) and from vit_jax / big_vision (.npz) into `models/vit.py`'s tree,
and back: `to_safetensors` (timm) and `to_npz` (vit_jax) are the exact inverses of the import maps.

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
Export writes vit_jax's names (no prefix, one entry per block), the layout timm's npz loader also reads.
"""

import logging
import re

import jax.numpy as jnp
from flax import traverse_util

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


# ---------------------------------------------------------------------------------------------- export

# timm's registered ViTs vit_<size>_patch<patch>_224: size -> ((width, depth, heads, mlp_dim), patches). Any
# other ViT is built from vit_base_patch16_224 with keyword arguments giving its whole architecture.
_TIMM_VITS = {"tiny": ((192, 12, 3, 768), (16,)), "small": ((384, 12, 6, 1536), (8, 16, 32)),
              "base": ((768, 12, 12, 3072), (8, 16, 32)), "large": ((1024, 24, 16, 4096), (14, 16, 32)),
              "huge": ((1280, 32, 16, 5120), (14,))}


def _exportable(model_config, layout: str):
    """The built ViT, or ValueError naming the field that `layout` cannot hold."""
    model = models.build(model_config)
    if model.token_learner is not None:
        raise ValueError(f"config.model.token_learner.enabled=True: the {layout} ViT layout has no TokenLearner; "
                         f"export with --format=ours")
    return model


def to_safetensors(variables: dict, model_config) -> dict:
    """{'params': ...} of `models/vit.py` -> timm `VisionTransformer` state dict {name: array}, the inverse
    of `from_safetensors`. Raises ValueError for what timm's ViT lacks (TokenLearner, a pre-logits layer)."""
    model = _exportable(model_config, "timm")
    if model.representation_size:
        raise ValueError(f"config.model.representation_size={model.representation_size}: timm's VisionTransformer "
                         f"has no pre-logits layer; export with --format=vit_jax or --format=ours")
    params, width = variables["params"], model.width
    out = {}

    def linear(prefix, p):  # [in, out] -> torch [out, in]
        out.update({f"{prefix}.weight": p["kernel"].T, f"{prefix}.bias": p["bias"]})

    def norm(prefix, p):
        out.update({f"{prefix}.weight": p["scale"], f"{prefix}.bias": p["bias"]})

    if "cls" in params:
        out["cls_token"] = params["cls"]
    out["pos_embed"] = params["posembed_input"]["pos_embedding"]
    out["patch_embed.proj.weight"] = params["stem"]["embedding"]["kernel"].transpose(3, 2, 0, 1)
    out["patch_embed.proj.bias"] = params["stem"]["embedding"]["bias"]
    for i in range(model.depth):
        block, prefix = params[f"encoderblock_{i}"], f"blocks.{i}"
        attention = block["MultiHeadDotProductAttention_1"]
        norm(f"{prefix}.norm1", block["LayerNorm_0"])
        qkv = [attention[name] for name in ("query", "key", "value")]
        out[f"{prefix}.attn.qkv.weight"] = jnp.concatenate([p["kernel"].reshape(width, width).T for p in qkv])
        out[f"{prefix}.attn.qkv.bias"] = jnp.concatenate([p["bias"].reshape(width) for p in qkv])
        out[f"{prefix}.attn.proj.weight"] = attention["out"]["kernel"].reshape(width, width).T
        out[f"{prefix}.attn.proj.bias"] = attention["out"]["bias"]
        norm(f"{prefix}.norm2", block["LayerNorm_2"])
        linear(f"{prefix}.mlp.fc1", block["MlpBlock_3"]["Dense_0"])
        linear(f"{prefix}.mlp.fc2", block["MlpBlock_3"]["Dense_1"])
    norm("norm", params["encoder_norm"])
    if "head" in params:
        linear("head", params["head"])
    return out


def to_npz(variables: dict, model_config) -> dict:
    """{'params': ...} of `models/vit.py` -> vit_jax checkpoint arrays {name: array} (the layout of the
    published .npz files: no prefix, one entry per block, the position embedding under the Transformer),
    the inverse of `from_npz`. Raises ValueError for a model with TokenLearner."""
    _exportable(model_config, "vit_jax")
    out = {}
    for name, value in traverse_util.flatten_dict(variables["params"], sep="/").items():
        top = name.split("/", 1)[0]
        if top == "stem":
            name = name[len("stem/"):]
        elif top.startswith("encoderblock_") or top in ("encoder_norm", "posembed_input"):
            name = "Transformer/" + name
        out[name] = value
    return out


def timm_model(model_config, image_size: int) -> tuple:
    """(timm model name, keyword arguments) for `timm.create_model`, building timm's counterpart of the
    model of `model_config` at `image_size`: the arguments give the whole architecture (timm's ViT
    entry points let keyword arguments override theirs)."""
    model = models.build(model_config)
    patch = model.patch_size[0]
    mlp_ratio = model.mlp_dim / model.width
    if int(model.width * mlp_ratio) != model.mlp_dim:
        raise ValueError(f"config.model.mlp_dim={model.mlp_dim}: timm's ViT sizes its MLP as int(width * ratio), "
                         f"which cannot give {model.mlp_dim} for width {model.width}")
    architecture = (model.width, model.depth, model.num_heads, model.mlp_dim)
    name = next((f"vit_{size}_patch{patch}_224" for size, (arch, patches) in _TIMM_VITS.items()
                 if arch == architecture and patch in patches), "vit_base_patch16_224")
    token = model.classifier == "token"
    arguments = dict(img_size=image_size, patch_size=patch, embed_dim=model.width, depth=model.depth,
                     num_heads=model.num_heads, mlp_ratio=mlp_ratio, class_token=token,
                     global_pool="token" if token else "avg", fc_norm=False, num_classes=model.num_classes)
    if model.gelu == "tanh":  # timm's default is the exact GELU
        arguments["act_layer"] = "gelu_tanh"
    return name, arguments
