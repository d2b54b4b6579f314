"""Parameters and MACs of X(2+1)D with TokenLearner (models/x2plus1d.py), the TokenLearner paper's
Charades / AViD network, with and without TokenLearner, against X3D-M's published size.

  python experiments/video_conv_macs.py

Parameters from jax.eval_shape (BatchNorm statistics excluded); MACs on one clip, nothing allocated: the
dot products and convolutions of the traced program (`flops.matmul_macs`) plus the channel-wise
convolutions, which the model computes as sums of shifted copies (`x2plus1d.channelwise_macs`), and
XLA's cost analysis of the compiled forward pass (`flops.forward_macs`, element-wise work included).
Writes experiments/results/video_conv_macs.md.
"""

import argparse
import os

import jax
import ml_collections

from tokenlearner_jax.models import flops, x2plus1d

# X3D-M as published (X3D paper, Feichtenhofer, CVPR 2020, table of the X3D models): 3.8M parameters,
# 6.2 GFLOPs (multiply-adds) per 16 x 256 x 256 view, Kinetics-400 head. Recalled, not re-read here.
X3D_M_PARAMS, X3D_M_GMACS = 3.8, 6.2
# X3D's channel-wise 3x3x3 conv has 27 taps where X(2+1)D has a 1x3x3 and a 3x1x1 (12).
EXTRA_X3D_TAPS = 27 - 12


def model_config(variant, num_classes, token_learner=True, attention_stages=()):
    """TokenLearner v1.0 (configs/charades_tl.py's) in the last stage, or attention over every position in
    `attention_stages`, or neither (the plain X(2+1)D)."""
    config = ml_collections.ConfigDict(x2plus1d.default_config())
    config.update(dict(variant=variant, num_classes=num_classes, attention_stages=attention_stages))
    config.token_learner.update(dict(enabled=token_learner, version="v1.0"))
    return config


# (name, config, clip shape)
PAPER = "TokenLearner v1.0, 8 tokens / frame -> transformer -> TokenFuser in stage 4"
ROWS = [
    ("X(2+1)D-M, conv only (Kinetics-400 head)", model_config("M", 400, False), (16, 224, 224, 3)),
    ("X(2+1)D-M, conv only (Kinetics-400 head)", model_config("M", 400, False), (16, 256, 256, 3)),
    ("X(2+1)D-M, conv only (Charades head)", model_config("M", 157, False), (64, 224, 224, 3)),
    (f"X(2+1)D-M, {PAPER} (the paper's model)", model_config("M", 157), (64, 224, 224, 3)),
    (f"X(2+1)D-M, {PAPER} (the paper's model)", model_config("M", 157), (64, 256, 256, 3)),
    ("X(2+1)D-M, transformer over all positions in stage 4 (no TokenLearner)",
     model_config("M", 157, False, (-1,)), (64, 256, 256, 3)),
    ("tiny, conv only (bundled multi-label digits)", model_config("tiny", 10, False), (16, 64, 64, 3)),
    ("tiny, 8 tokens / frame -> transformer -> TokenFuser in stage 3", model_config("tiny", 10), (16, 64, 64, 3)),
    ("tiny, transformer over all positions in stage 3", model_config("tiny", 10, False, (-1,)), (16, 64, 64, 3)),
]


def transformer_tokens(model, shape) -> str:
    """Tokens each transformer of the last transformer stage attends over: with TokenLearner the learned
    tokens of every frame; without, every position of the stage's map, and in its first block (which
    attends before downsampling) of the previous stage's map. '-' without transformer stages."""
    stages = model.transformer_stages()
    if not stages:
        return "-"
    frames, height, width = shape[:3]
    stage = max(stages)
    if stages[stage] is not None:
        return str(frames * stages[stage].num_tokens)
    (first_h, first_w), (h, w) = model.stage_maps(height, width)[stage]
    return f"{frames * h * w} (first block {frames * first_h * first_w})"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "video_conv_macs.md"))
    args = parser.parse_args()
    lines = [("| model | clip (T x H x W) | params (M) | transformer tokens | GMACs (dot + conv) "
              "| GMACs (XLA, all ops) |"),
             "|---|---|---|---|---|---|"]
    x3d_lines = []
    for name, config, shape in ROWS:
        model = x2plus1d.build(config)
        costs = flops.model_costs(model, shape)
        channelwise = x2plus1d.channelwise_macs(model, shape)
        macs = (costs["matmul_macs"] + channelwise) / 1e9
        clip = "x".join(str(n) for n in shape[:3])
        lines.append(f"| {name} | {clip} | {costs['params'] / 1e6:.3f} | {transformer_tokens(model, shape)} | "
                     f"{macs:.4g} | {costs['xla_macs'] / 1e9:.4g} |")
        print(lines[-1], flush=True)
        if config.num_classes == 400 and shape[1] == 256:
            # The same network with X3D's channel-wise 3x3x3 convs: 15 more taps per inner channel (weights)
            # and per output element (MACs) of every block's 1x3x3 conv.
            spatial = [elements for path, (elements, _) in x2plus1d.channelwise_convs(model, shape).items()
                       if path[-1] == "spatial"]
            inner_sum = sum(d * int(model.expansion * w) for w, d in zip(model.widths, model.depths))
            params_3d = (costs["params"] + EXTRA_X3D_TAPS * inner_sum) / 1e6
            macs_3d = macs + EXTRA_X3D_TAPS * sum(spatial) / 1e9
            x3d_lines = [
                "| | params (M) | GMACs, 16 x 256 x 256 |", "|---|---|---|",
                f"| X(2+1)D-M (this code) | {costs['params'] / 1e6:.3f} | {macs:.3f} |",
                f"| the same with X3D's 3x3x3 channel-wise convs (+15 taps) | {params_3d:.3f} | {macs_3d:.3f} |",
                f"| X3D-M, published | {X3D_M_PARAMS} | {X3D_M_GMACS} |"]
    text = (
        "# X(2+1)D with TokenLearner: parameters and MACs\n\n"
        f"Command: `python experiments/video_conv_macs.py` (jax {jax.__version__}; counts on abstract shapes, "
        "one clip, nothing allocated; parameters exclude the BatchNorm running statistics).\n\n"
        + "\n".join(lines) +
        "\n\n'dot + conv' counts the multiply-accumulates of convolutions (the channel-wise ones included), "
        "Dense layers and the attention products, as papers report (G)FLOPs; XLA's count adds the element-wise "
        "work (BatchNorm, activations, softmax, LayerNorm, squeeze-excite gating, residual adds).\n\n"
        "## The backbone against X3D-M\n\n"
        "X(2+1)D-M has X3D-M's widths, depths, stem, squeeze-excite and head; only each block's channel-wise "
        "3x3x3 convolution is factorised into 1x3x3 + 3x1x1. Adding back the 15 taps per channel that the "
        "factorisation removes recovers X3D-M's published size (X3D paper, recalled: 3.8M parameters, 6.2 "
        "GFLOPs per 16 x 256 x 256 view):\n\n" + "\n".join(x3d_lines) +
        "\n\n## The paper's model\n\n"
        "The TokenLearner paper (arXiv 2106.11297) evaluates this network on Charades (66.3 mAP) and AViD with "
        "64-frame clips at 224 x 224 in training and 256 x 256 in testing, 8 learned tokens per frame: the "
        "transformer attends over 64 x 8 = 512 tokens instead of the 8 x 8 x 64 = 4,096 positions of the "
        "last stage's 8 x 8 maps (the table's 512 and 4096). Its parameter and FLOP figures for this network "
        "were not available in the sources read for this work (a summary of the paper's text); the rows "
        "above are this implementation's counts. The transformer here is the shared pre-norm encoder block "
        "with an MLP of 4 x the width (1,728 at the last stage's inner width 432): with 7 transformer blocks "
        "it holds about 15.7M of the 19.2M parameters; the paper's 'vector transformer' may differ.\n")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
