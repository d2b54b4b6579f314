"""timm's maxvit_*_tf_{224,384,512} checkpoints (safetensors, ported from the official TF weights) into
`models/maxvit.py`'s tree, BatchNorm statistics included.

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

from tokenlearner_jax.layers.relative_position import resize_table
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
