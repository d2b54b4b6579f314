"""Parameters and MACs of the bundled multi-label / Charades / AViD video configs, as they are.

  python experiments/video_config_costs.py

For each config: the model's parameter count (jax.eval_shape; BatchNorm statistics excluded) and the
dot + conv MACs of one training clip (`config.dataset.num_frames` x `image_size`^2; the traced program's
dot products and convolutions, `flops.matmul_macs`, plus X(2+1)D's channel-wise convolutions,
`x2plus1d.channelwise_macs`), and of one test video (x the config's eval_temporal_views x
eval_spatial_views). Counts on abstract shapes: nothing is allocated or run, no data is read. XLA's count
(element-wise work included) is left out here: experiments/video_conv_macs.py and vivit_macs.py give it
for the same networks. Writes experiments/results/video_config_costs.md.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tokenlearner_jax import models  # noqa: E402  pylint: disable=wrong-import-position
from tokenlearner_jax.models import flops, x2plus1d  # noqa: E402  pylint: disable=wrong-import-position
from tokenlearner_jax.recipes import sweeps  # noqa: E402  pylint: disable=wrong-import-position

CONFIGS = ("configs/charades_tl.py", "configs/avid_tl.py", "configs/vivit_b16x2_tl_charades.py",
           "configs/quickstart_video_multilabel.py", "configs/quickstart_video_multilabel.py:vivit")


def costs(config_arg: str) -> dict:
    path, arg = sweeps.split_config_path(config_arg)
    config = sweeps.load_module(os.path.join(ROOT, path)).get_config(arg)
    shape = (config.dataset.num_frames, config.dataset.image_size, config.dataset.image_size, 3)
    model = models.build(config.model)
    abstract = flops.abstract_variables(model, shape)
    macs = flops.matmul_macs(model, shape, abstract)
    if config.model.name == "x2plus1d":
        macs += x2plus1d.channelwise_macs(model, shape)
    views = config.dataset.eval_temporal_views * config.dataset.eval_spatial_views
    return dict(config=config_arg, model=config.model.name, classes=config.model.num_classes,
                params=flops.count_params(abstract["params"]), clip="x".join(str(n) for n in shape[:3]),
                gmacs=macs / 1e9, views=views)


def main():
    lines = ["| config | model | classes | params (M) | training clip (T x H x W) | GMACs / clip (dot + conv) "
             "| test views / video | GMACs / test video |",
             "|---|---|---|---|---|---|---|---|"]
    for config_arg in CONFIGS:
        row = costs(config_arg)
        lines.append(f"| `{row['config']}` | {row['model']} | {row['classes']} | {row['params'] / 1e6:.3f} | "
                     f"{row['clip']} | {row['gmacs']:.4g} | {row['views']} | {row['views'] * row['gmacs']:.4g} |")
        print(lines[-1], flush=True)
    text = (
        "# Video configs: parameters and MACs\n\n"
        "Command: `python experiments/video_config_costs.py` (counts on abstract shapes: nothing allocated, no "
        "data read).\n\n" + "\n".join(lines) +
        "\n\n'dot + conv' counts the multiply-accumulates of convolutions (X(2+1)D's channel-wise ones "
        "included), Dense layers and attention products, as papers report (G)FLOPs. Test views are the "
        "config's eval_temporal_views x eval_spatial_views, each a clip of the training size (the config's "
        "evaluation; the TokenLearner paper's 256 x 256 testing of the X(2+1)D models is in "
        "video_conv_macs.md).\n")
    with open(os.path.join(ROOT, "experiments", "results", "video_config_costs.md"), "w", encoding="utf-8") as f:
        f.write(text)


if __name__ == "__main__":
    main()
