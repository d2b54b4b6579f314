"""timm's poolformer_* checkpoints (safetensors) into `models/poolformer.py`'s tree.

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
