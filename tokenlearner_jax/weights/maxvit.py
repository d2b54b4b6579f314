"""timm's maxvit_*_tf_{224,384,512} checkpoints (safetensors, ported from the official TF weights) into
`models/maxvit.py`'s tree, BatchNorm statistics included, and back (`to_safetensors`, the exact inverse;
it writes num_batches_tracked as 0, which timm's eval mode and momentum-based updates never read).

timm (1.0.x, `timm/models/maxxvit.py`) names: `stem.{conv1, norm1, conv2}`;
`stages.{i}.blocks.{j}.conv.{shortcut.expand (first block, width change), pre_norm, conv1_1x1, norm1,
conv2_kxk, norm2, se.fc1, se.fc2, conv3_1x1}`; `stages.{i}.blocks.{j}.attn_{block,grid}.{norm1,
attn.qkv, attn.rel_pos.relative_position_bias_table, attn.proj, norm2, mlp.fc1, mlp.fc2}`;
`head.{norm, pre_logits.fc, fc}`. Layouts:
- conv kernels `[out, in/groups, kh, kw]` -> `[kh, kw, in/groups, out]`; 1x1 convs `[out, in, 1, 1]` and
  Linear weights `[out, in]` -> Dense kernels `[in, out]`;
- BatchNorm weight / bias -> params scale / bias; running_mean / running_var -> batch_stats mean / var;
  num_batches_tracked is read and dropped (only torch's cumulative-average mode uses it);
- the fused qkv Linear `[3 * width, width]` has its output ordered (q/k/v, head, head_dim) in the TF
  port (timm's head_first=False), so it splits into our query / key / value kernels
  `[width, heads, head_dim]` and biases `[heads, head_dim]`; proj `[width, heads*head_dim]` -> out
  kernel `[heads, head_dim, width]`;
- relative_position_bias_table `[heads, 2w-1, 2w-1]` -> relative_position_bias/table, resized by 2D
  bilinear interpolation when the model's window or grid differs from the checkpoint's
  (layers/relative_position.resize_table; the same happens in weights/init_from.py's reconcile).

Parameters of our model that timm's MaxViT lacks (TokenLearner) are not produced here;
`config.init_from.fresh_if_missing` initialises them fresh.
"""

import jax.numpy as jnp
import numpy as np

from tokenlearner_jax.layers.relative_position import resize_table
from tokenlearner_jax import models
from tokenlearner_jax.models import maxvit
from tokenlearner_jax.weights import TensorTaker

SOURCE = "timm MaxViT safetensors"


def from_safetensors(tensors: dict, model_config, image_size: int = 0) -> dict:
    """timm MaxViT (`maxvit_*_tf_*`) state dict -> {'params': ..., 'batch_stats': ...} for models/maxvit.py.

    The stages and blocks read are those of `model_config` (config_lib.maxvit_model); a tensor the config
    has no place for, or a place the checkpoint has no tensor for, raises ValueError naming it. Relative
    bias tables are resized to config.model.window_size / grid_size when those are set (> 0) or when
    `image_size` is given; otherwise they keep the checkpoint's size (init_from.reconcile resizes them to
    the model's). Shapes are checked against the model by the caller (init_from.reconcile)."""
    _, depths, _ = maxvit.resolve_architecture(model_config)
    take = TensorTaker(tensors, source=SOURCE)
    auto = image_size >> (len(depths) + 1)  # the last stage's map side, as the model's default
    window, grid = model_config.window_size or auto, model_config.grid_size or auto

    def conv(prefix, bias=True):
        out = {"kernel": take(f"{prefix}.weight").transpose(2, 3, 1, 0)}
        return dict(out, bias=take(f"{prefix}.bias")) if bias else out

    def linear(prefix, bias=True):  # Linear [out, in] or 1x1 conv [out, in, 1, 1] -> Dense [in, out]
        weight = take(f"{prefix}.weight")
        out = {"kernel": weight.reshape(weight.shape[:2]).T}
        return dict(out, bias=take(f"{prefix}.bias")) if bias else out

    def norm(prefix):
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    batch_stats = {}

    def batch_norm(prefix, path):
        """BatchNorm `prefix` -> its params; its statistics go to batch_stats at `path`."""
        take(f"{prefix}.num_batches_tracked")
        node = batch_stats
        for key in path:
            node = node.setdefault(key, {})
        node.update(mean=take(f"{prefix}.running_mean"), var=take(f"{prefix}.running_var"))
        return norm(prefix)

    def attention(prefix, size):
        qkv, qkv_bias = take(f"{prefix}.attn.qkv.weight"), take(f"{prefix}.attn.qkv.bias")
        width = qkv.shape[1]
        heads = width // model_config.head_dim
        qkv = qkv.reshape(3, heads, model_config.head_dim, width).transpose(0, 3, 1, 2)
        qkv_bias = qkv_bias.reshape(3, heads, model_config.head_dim)
        proj = take(f"{prefix}.attn.proj.weight")
        table = take(f"{prefix}.attn.rel_pos.relative_position_bias_table")
        return {
            "norm_1": norm(f"{prefix}.norm1"),
            "attention": {
                **{name: {"kernel": qkv[k], "bias": qkv_bias[k]} for k, name in enumerate(("query", "key", "value"))},
                "out": {"kernel": proj.T.reshape(heads, model_config.head_dim, width),
                        "bias": take(f"{prefix}.attn.proj.bias")},
            },
            "relative_position_bias": {"table": resize_table(table, size) if size else table},
            "norm_2": norm(f"{prefix}.norm2"),
            "mlp": {"Dense_0": linear(f"{prefix}.mlp.fc1"), "Dense_1": linear(f"{prefix}.mlp.fc2")},
        }

    params = {"stem": {"conv_1": conv("stem.conv1"),
                       "norm_1": batch_norm("stem.norm1", ("stem", "norm_1")),
                       "conv_2": conv("stem.conv2")}}
    for i, depth in enumerate(depths):
        stage = params[f"stage_{i}"] = {}
        for j in range(depth):
            prefix, path = f"stages.{i}.blocks.{j}", (f"stage_{i}", f"block_{j}", "mbconv")
            mbconv = {}
            if f"{prefix}.conv.shortcut.expand.weight" in take:
                mbconv["shortcut"] = linear(f"{prefix}.conv.shortcut.expand")
            mbconv.update(
                pre_norm=batch_norm(f"{prefix}.conv.pre_norm", path + ("pre_norm",)),
                expand=linear(f"{prefix}.conv.conv1_1x1", bias=False),
                expand_norm=batch_norm(f"{prefix}.conv.norm1", path + ("expand_norm",)),
                depthwise=conv(f"{prefix}.conv.conv2_kxk", bias=False),
                depthwise_norm=batch_norm(f"{prefix}.conv.norm2", path + ("depthwise_norm",)),
                se_reduce=linear(f"{prefix}.conv.se.fc1"),
                se_expand=linear(f"{prefix}.conv.se.fc2"),
                project=linear(f"{prefix}.conv.conv3_1x1"),
            )
            stage[f"block_{j}"] = {"mbconv": mbconv,
                                   "block_attention": attention(f"{prefix}.attn_block", window),
                                   "grid_attention": attention(f"{prefix}.attn_grid", grid)}
    params["head_norm"] = norm("head.norm")
    params["pre_logits"] = linear("head.pre_logits.fc")
    if "head.fc.weight" in take:
        params["head"] = linear("head.fc")
    take.check_all_used()
    return {"params": params, "batch_stats": batch_stats}


# ---------------------------------------------------------------------------------------------- export

_TIMM_SIZES = {"T": "tiny", "S": "small", "B": "base", "L": "large"}
_TIMM_RESOLUTIONS = (224, 384, 512)


def to_safetensors(variables: dict, model_config) -> dict:
    """{'params': ..., 'batch_stats': ...} of `models/maxvit.py` -> timm MaxxVit (`maxvit_*_tf_*`) state dict
    {name: array}, the inverse of `from_safetensors` (relative bias tables at the model's window size)."""
    if models.build(model_config).token_learner is not None:
        raise ValueError("config.model.token_learner.enabled=True: timm's MaxViT has no TokenLearner; export with "
                         "--format=ours")
    _, depths, _ = maxvit.resolve_architecture(model_config)
    params, stats, out = variables["params"], variables["batch_stats"], {}

    def conv(prefix, p):  # [kh, kw, in/groups, out] -> [out, in/groups, kh, kw]
        out[f"{prefix}.weight"] = p["kernel"].transpose(3, 2, 0, 1)
        if "bias" in p:
            out[f"{prefix}.bias"] = p["bias"]

    def linear(prefix, p, pointwise):  # Dense [in, out] -> Linear [out, in] or 1x1 conv [out, in, 1, 1]
        weight = p["kernel"].T
        out[f"{prefix}.weight"] = weight.reshape(weight.shape + (1, 1)) if pointwise else weight
        if "bias" in p:
            out[f"{prefix}.bias"] = p["bias"]

    def norm(prefix, p):
        out.update({f"{prefix}.weight": p["scale"], f"{prefix}.bias": p["bias"]})

    def batch_norm(prefix, p, statistics):
        norm(prefix, p)
        out.update({f"{prefix}.running_mean": statistics["mean"], f"{prefix}.running_var": statistics["var"],
                    f"{prefix}.num_batches_tracked": np.zeros((), np.int64)})

    def attention(prefix, p):
        heads, head_dim, width = p["attention"]["out"]["kernel"].shape
        norm(f"{prefix}.norm1", p["norm_1"])
        qkv = jnp.stack([p["attention"][name]["kernel"] for name in ("query", "key", "value")])
        out[f"{prefix}.attn.qkv.weight"] = qkv.transpose(0, 2, 3, 1).reshape(3 * heads * head_dim, width)
        out[f"{prefix}.attn.qkv.bias"] = jnp.stack(
            [p["attention"][name]["bias"] for name in ("query", "key", "value")]).reshape(-1)
        out[f"{prefix}.attn.rel_pos.relative_position_bias_table"] = p["relative_position_bias"]["table"]
        out[f"{prefix}.attn.proj.weight"] = p["attention"]["out"]["kernel"].reshape(heads * head_dim, width).T
        out[f"{prefix}.attn.proj.bias"] = p["attention"]["out"]["bias"]
        norm(f"{prefix}.norm2", p["norm_2"])
        linear(f"{prefix}.mlp.fc1", p["mlp"]["Dense_0"], pointwise=False)
        linear(f"{prefix}.mlp.fc2", p["mlp"]["Dense_1"], pointwise=False)

    conv("stem.conv1", params["stem"]["conv_1"])
    batch_norm("stem.norm1", params["stem"]["norm_1"], stats["stem"]["norm_1"])
    conv("stem.conv2", params["stem"]["conv_2"])
    for i, depth in enumerate(depths):
        for j in range(depth):
            block, prefix = params[f"stage_{i}"][f"block_{j}"], f"stages.{i}.blocks.{j}"
            mbconv, mbconv_stats = block["mbconv"], stats[f"stage_{i}"][f"block_{j}"]["mbconv"]
            if "shortcut" in mbconv:
                linear(f"{prefix}.conv.shortcut.expand", mbconv["shortcut"], pointwise=True)
            batch_norm(f"{prefix}.conv.pre_norm", mbconv["pre_norm"], mbconv_stats["pre_norm"])
            linear(f"{prefix}.conv.conv1_1x1", mbconv["expand"], pointwise=True)
            batch_norm(f"{prefix}.conv.norm1", mbconv["expand_norm"], mbconv_stats["expand_norm"])
            conv(f"{prefix}.conv.conv2_kxk", mbconv["depthwise"])
            batch_norm(f"{prefix}.conv.norm2", mbconv["depthwise_norm"], mbconv_stats["depthwise_norm"])
            linear(f"{prefix}.conv.se.fc1", mbconv["se_reduce"], pointwise=True)
            linear(f"{prefix}.conv.se.fc2", mbconv["se_expand"], pointwise=True)
            linear(f"{prefix}.conv.conv3_1x1", mbconv["project"], pointwise=True)
            attention(f"{prefix}.attn_block", block["block_attention"])
            attention(f"{prefix}.attn_grid", block["grid_attention"])
    norm("head.norm", params["head_norm"])
    linear("head.pre_logits.fc", params["pre_logits"], pointwise=False)
    if "head" in params:
        linear("head.fc", params["head"], pointwise=False)
    return out


def timm_model(model_config, image_size: int) -> tuple:
    """(timm model name, keyword arguments) for `timm.create_model`, building timm's counterpart at
    `image_size`: maxvit_<size>_tf_<resolution>, with keyword arguments for whatever differs from it (timm's
    MaxxVit overlays them on the variant's config)."""
    if model_config.se_ratio != 0.25:
        raise ValueError(f"config.model.se_ratio={model_config.se_ratio}: timm's maxvit_*_tf models squeeze to 1/4 "
                         f"of the block width; export with --format=ours")
    stem, depths, dims = maxvit.resolve_architecture(model_config)
    variant_stem, variant_depths, variant_dims, _ = maxvit.VARIANTS[model_config.variant]
    resolution = image_size if image_size in _TIMM_RESOLUTIONS else 224
    kwargs = dict(img_size=image_size, num_classes=model_config.num_classes)
    if (stem, depths, dims) != (variant_stem, variant_depths, variant_dims):
        kwargs.update(stem_width=stem, depths=depths, embed_dim=dims, head_hidden_size=dims[-1])
    window = model_config.window_size or image_size >> (len(depths) + 1)  # the model's default: maxvit.py
    grid = model_config.grid_size or image_size >> (len(depths) + 1)
    if (window, grid) != (image_size // 32,) * 2:  # timm's default: image_size / partition_ratio 32
        kwargs.update(transformer_window_size=(window, window), transformer_grid_size=(grid, grid))
    for ours, theirs, default in (("head_dim", "transformer_dim_head", 32), ("mlp_ratio", "transformer_expand_ratio", 4),
                                  ("expand_ratio", "conv_expand_ratio", 4), ("bn_epsilon", "conv_norm_eps", 1e-3)):
        if model_config[ours] != default:
            kwargs[theirs] = model_config[ours]
    return f"maxvit_{_TIMM_SIZES[model_config.variant]}_tf_{resolution}", kwargs
