"""timm's poolformer_* checkpoints (safetensors) into `models/poolformer.py`'s tree, and back
(`to_safetensors`, the exact inverse).

timm (1.0.x, `timm/models/metaformer.py`) names: `stem.conv`, `stages.{i}.downsample.conv` (i > 0),
`stages.{i}.blocks.{j}.{norm1, layer_scale1.scale, norm2, mlp.fc1, mlp.fc2, layer_scale2.scale}`,
`head.norm`, `head.fc`. Layouts: conv kernels `[out, in, kh, kw]` -> `[kh, kw, in, out]`; the MLP's
1x1-conv kernels `[out, in, 1, 1]` and Linear weights `[out, in]` -> Dense kernels `[in, out]`; norm
weight -> scale.

timm's head pools first and then normalises the pooled `[batch, channels]` vector with a LayerNorm
(eps 1e-6), where the paper's code normalises the grid with a GroupNorm before pooling. The same
scale and bias serve both, but only the former reproduces timm's outputs, so the model config must
say `head_norm='pooled_layer_norm'`. Parameters of our model that timm's PoolFormer lacks (TokenLearner,
the weights of other token mixers) are not produced here: `weights/init_from.py` initialises them fresh
where `config.init_from.fresh_if_missing` allows it, e.g. `('token_learner',)`.
"""

from tokenlearner_jax import models
from tokenlearner_jax.models import poolformer
from tokenlearner_jax.weights import TensorTaker

SOURCE = "timm PoolFormer safetensors"


def from_safetensors(tensors: dict, model_config) -> dict:
    """timm PoolFormer (v1) state dict -> {'params': ...} for `models/poolformer.py`.

    The stages and blocks read are those of `model_config` (config_lib.poolformer_model); a tensor the
    config has no place for, or a place the checkpoint has no tensor for, raises ValueError naming it.
    Shapes are checked against the model by the caller (init_from.reconcile)."""
    if model_config.head_norm != "pooled_layer_norm":
        raise ValueError(f"{SOURCE}: config.model.head_norm={model_config.head_norm!r}, but timm's head pools "
                         f"before its norm: pass --config.model.head_norm=pooled_layer_norm")
    depths, _, _, _ = poolformer.resolve_architecture(model_config)
    take = TensorTaker(tensors, source=SOURCE)

    def conv(prefix):
        return {"kernel": take(f"{prefix}.weight").transpose(2, 3, 1, 0), "bias": take(f"{prefix}.bias")}

    def pointwise(prefix):  # 1x1 conv [out, in, 1, 1] -> Dense [in, out]
        weight = take(f"{prefix}.weight")
        return {"kernel": weight.reshape(weight.shape[:2]).T, "bias": take(f"{prefix}.bias")}

    def norm(prefix):
        return {"scale": take(f"{prefix}.weight"), "bias": take(f"{prefix}.bias")}

    params = {"stem": conv("stem.conv")}
    for i, depth in enumerate(depths):
        stage = {"downsample": conv(f"stages.{i}.downsample.conv")} if i else {}
        for j in range(depth):
            block = f"stages.{i}.blocks.{j}"
            stage[f"block_{j}"] = {
                "norm_1": norm(f"{block}.norm1"),
                "layer_scale_1": take(f"{block}.layer_scale1.scale"),
                "norm_2": norm(f"{block}.norm2"),
                "mlp": {"Dense_0": pointwise(f"{block}.mlp.fc1"), "Dense_1": pointwise(f"{block}.mlp.fc2")},
                "layer_scale_2": take(f"{block}.layer_scale2.scale"),
            }
        params[f"stage_{i}"] = stage
    params["head_norm"] = norm("head.norm")
    if "head.fc.weight" in take:
        params["head"] = {"kernel": take("head.fc.weight").T, "bias": take("head.fc.bias")}
    take.check_all_used()
    return {"params": params}


# ---------------------------------------------------------------------------------------------- export

class _Source(str):
    """Python source standing for a value in keyword arguments: its repr is the source itself."""

    def __repr__(self):
        return str(self)


# The arguments of timm's poolformer_* entry points besides depths and dims (timm/models/metaformer.py): a
# model that is not one of the registered variants is built from MetaFormer with them.
_TIMM_POOLFORMER_ARGS = dict(downsample_norm=None, mlp_act=_Source("torch.nn.GELU"), mlp_bias=True,
                             norm_layers=_Source("timm.layers.GroupNorm1"), layer_scale_init_values=1e-5,
                             res_scale_init_values=None, use_mlp_head=False)


def _check_timm_compatible(model_config):
    """ValueError naming the first field of `model_config` that timm's PoolFormer cannot reproduce."""
    if model_config.head_norm != "pooled_layer_norm":
        raise ValueError(f"config.model.head_norm={model_config.head_norm!r}: timm's PoolFormer head pools before "
                         f"its norm ('pooled_layer_norm'), so this model has no timm counterpart; export with "
                         f"--format=ours")
    _, _, mixers, _ = poolformer.resolve_architecture(model_config)
    if set(mixers) != {"pooling"}:
        raise ValueError(f"config.model.mixers={tuple(model_config.mixers)}: timm's PoolFormer has only pooling "
                         f"mixers; export with --format=ours")
    if model_config.pool_size != 3:
        raise ValueError(f"config.model.pool_size={model_config.pool_size}: timm's PoolFormer pools 3x3; export "
                         f"with --format=ours")
    if models.build(model_config).token_learner is not None:
        raise ValueError("config.model.token_learner.enabled=True: timm's PoolFormer has no TokenLearner; export "
                         "with --format=ours")


def to_safetensors(variables: dict, model_config) -> dict:
    """{'params': ...} of `models/poolformer.py` -> timm PoolFormer (v1) state dict {name: array}, the inverse
    of `from_safetensors`. Raises ValueError naming the field when the model has no timm counterpart."""
    _check_timm_compatible(model_config)
    depths, _, _, _ = poolformer.resolve_architecture(model_config)
    params, out = variables["params"], {}

    def conv(prefix, p):  # [kh, kw, in, out] -> [out, in, kh, kw]
        out.update({f"{prefix}.weight": p["kernel"].transpose(3, 2, 0, 1), f"{prefix}.bias": p["bias"]})

    def pointwise(prefix, p):  # Dense [in, out] -> 1x1 conv [out, in, 1, 1]
        kernel = p["kernel"]
        out.update({f"{prefix}.weight": kernel.T.reshape(kernel.shape[1], kernel.shape[0], 1, 1),
                    f"{prefix}.bias": p["bias"]})

    def norm(prefix, p):
        out.update({f"{prefix}.weight": p["scale"], f"{prefix}.bias": p["bias"]})

    conv("stem.conv", params["stem"])
    for i, depth in enumerate(depths):
        stage = params[f"stage_{i}"]
        if i:
            conv(f"stages.{i}.downsample.conv", stage["downsample"])
        for j in range(depth):
            block, prefix = stage[f"block_{j}"], f"stages.{i}.blocks.{j}"
            norm(f"{prefix}.norm1", block["norm_1"])
            out[f"{prefix}.layer_scale1.scale"] = block["layer_scale_1"]
            norm(f"{prefix}.norm2", block["norm_2"])
            pointwise(f"{prefix}.mlp.fc1", block["mlp"]["Dense_0"])
            pointwise(f"{prefix}.mlp.fc2", block["mlp"]["Dense_1"])
            out[f"{prefix}.layer_scale2.scale"] = block["layer_scale_2"]
    norm("head.norm", params["head_norm"])
    if "head" in params:
        out.update({"head.fc.weight": params["head"]["kernel"].T, "head.fc.bias": params["head"]["bias"]})
    return out


def timm_model(model_config, image_size: int) -> tuple:
    """How timm builds this model: (registered model name, keyword arguments for `timm.create_model`) for
    one of the variants; otherwise ('timm.models.metaformer.MetaFormer', its keyword arguments, some of
    them Python source whose repr is that source), since the registered entry points fix depths and dims.
    timm's MetaFormer takes any input size, so `image_size` changes nothing."""
    del image_size
    _check_timm_compatible(model_config)
    depths, dims, _, _ = poolformer.resolve_architecture(model_config)
    variant_depths, variant_dims, _, _ = poolformer.VARIANTS[model_config.variant]
    kwargs = dict(num_classes=model_config.num_classes)
    if model_config.mlp_ratio != 4:
        kwargs["mlp_ratios"] = model_config.mlp_ratio
    if (depths, dims) == (variant_depths, variant_dims):
        return f"poolformer_{model_config.variant.lower()}", kwargs
    return "timm.models.metaformer.MetaFormer", dict(depths=depths, dims=dims, **kwargs, **_TIMM_POOLFORMER_ARGS)
