"""Dumps every config under configs/ as the training run it resolves to, for comparing two versions of the code.

  python experiments/dump_configs.py --output=experiments/results/configs_after.txt

For each config file (and the extra arguments its docstring documents), writes the config after all
defaults (sorted JSON), the model that `models.build(config.model)` makes from it (the Flax module with
every resolved field) and its parameter count from `jax.eval_shape` (nothing is allocated), plus the
sweep of files that define `get_sweep`. Only the documented entry points are used (`get_config`,
`get_sweep`, `models.build`), so the same script runs on the code before and after a change, and a
`diff` of the two outputs lists every difference.
"""

import argparse
import glob
import importlib.util
import json
import os
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Arguments documented in the config docstrings, beside the default (no argument).
EXTRA_ARGS = {"nest_digits.py": ["vit"], "nest_cifar_base.py": ["cifar100"], "maxvit_base.py": ["1024"],
              "poolformer_s12.py": ["512"]}


def load(path: str):
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def input_shape(config) -> tuple:
    size = config.dataset.image_size
    frames = config.dataset.get("num_frames", 0)
    return (1,) + ((frames,) if frames else ()) + (size, size, 3)


def describe(module, arg) -> str:
    from tokenlearner_jax import models

    config = module.get_config(arg)
    config_line = "config: " + json.dumps(json.loads(config.to_json_best_effort()), indent=1, sort_keys=True)
    if "model" not in config:  # e.g. the gan task: its networks are config.gan's generator and discriminator
        return config_line
    model = models.build(config.model)
    shape = input_shape(config)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros(shape, jnp.float32), train=False))
    params = flax.core.meta.unbox(variables["params"])
    count = int(sum(np.prod(x.shape) for x in jax.tree.leaves(params)))
    lines = [config_line, "model: " + repr(model), f"input: {list(shape)}", f"parameters: {count}"]
    if hasattr(module, "get_sweep"):
        lines.append("sweep: " + json.dumps(module.get_sweep(arg), sort_keys=True))
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True)
    args = parser.parse_args()
    sys.path.insert(0, ROOT)
    blocks = []
    for path in sorted(glob.glob(os.path.join(ROOT, "configs", "*.py"))):
        name = os.path.basename(path)
        module = load(path)
        for arg in [None] + EXTRA_ARGS.get(name, []):
            title = name + (f":{arg}" if arg else "")
            blocks.append(f"=== {title}\n{describe(module, arg)}\n")
            print(title, blocks[-1].splitlines()[-1] if "sweep" not in blocks[-1] else "", flush=True)
    with open(args.output, "w", encoding="utf-8") as f:
        f.write("\n".join(blocks))


if __name__ == "__main__":
    main()
