"""Parameters and MACs of ViViT-B/16x2 at 32 frames of 224x224 (configs/vivit_b16x2_tl_k400.py's model),
with and without TokenLearner, joint and factorised encoders.

  python experiments/vivit_macs.py

Counts on abstract shapes (nothing is allocated or run): parameters with jax.eval_shape, MACs per view
(one 32-frame clip) as XLA's cost analysis of the compiled forward pass and as the dot + conv MACs of
the traced program (models/flops.py). Writes experiments/results/vivit_macs.md.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax import models  # noqa: E402  pylint: disable=wrong-import-position
from tokenlearner_jax.models import flops  # noqa: E402  pylint: disable=wrong-import-position

SHAPE = (32, 224, 224, 3)
VARIANTS = (
    ("ViViT-B/16x2, joint encoder", dict(encoder="joint")),
    ("ViViT-B/16x2 + TokenLearner, 8 tokens per slice before layer 6 (the k400 config)",
     dict(encoder="joint", token_learner=dict(enabled=True, location=0.5, num_tokens=8))),
    ("ViViT-B/16x2, factorised encoder (4 temporal layers)", dict(encoder="factorised")),
    ("ViViT-B/16x2 factorised + TokenLearner, 8 tokens per slice before spatial layer 6",
     dict(encoder="factorised", token_learner=dict(enabled=True, location=0.5, num_tokens=8))),
)


def main():
    lines = ["| model | params | GMACs / view (dot + conv) | GMACs / view (XLA) | x 12 views (XLA) |",
             "|---|---|---|---|---|"]
    for label, kwargs in VARIANTS:
        model = models.build(models.config("vivit", variant="B/16", tubelet_frames=2, num_classes=400, **kwargs))
        costs = flops.model_costs(model, SHAPE)
        params = costs["params"]
        dot = costs["matmul_macs"] / 1e9
        xla = costs["xla_macs"] / 1e9
        lines.append(f"| {label} | {params / 1e6:.2f}M | {dot:.1f} | {xla:.1f} | {12 * xla:.0f} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + ("\n\nOne view = one clip of 32 frames at 224x224 in 2x16x16 tubelets (16 slices of 196 "
                               "tokens), class-token classifier, 400 classes; the k400 config evaluates 4 clips x "
                               "3 crops = 12 views per video.")
    with open(os.path.join(ROOT, "experiments", "results", "vivit_macs.md"), "w", encoding="utf-8") as f:
        f.write("# ViViT-B/16x2 at 32x224: parameters and MACs\n\nCommand: `python experiments/vivit_macs.py`\n\n"
                + text + "\n")
    print(text)


if __name__ == "__main__":
    main()
