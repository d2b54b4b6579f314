"""Weight maps from published checkpoints to our parameter trees, one module per backbone.

`weights/<config.model.name>.py` exposes some of
  from_safetensors(tensors: dict[str, np.ndarray], model_config) -> {'params': ..., 'batch_stats': ...}
  from_npz(arrays: dict[str, np.ndarray], model_config) -> {'params': ...}
each returning nested dicts of arrays named like the Flax module's variables, and raising ValueError
when a source tensor is left unused. The maps use only array methods (`.transpose`, `.reshape`,
slicing), so they also run under `jax.eval_shape` on shapes alone. `weights/init_from.py` and
`tokenlearner_jax.convert` pick the module by name with `for_model`.
"""

import importlib
from types import ModuleType


def for_model(model_name: str) -> ModuleType:
    """The weight-map module of backbone `model_name` (config.model.name)."""
    module_name = f"{__name__}.{model_name}"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name != module_name:
            raise
        raise ValueError(f"no weight map for model {model_name!r}: expected tokenlearner_jax/weights/"
                         f"{model_name}.py") from e


def converter(model_name: str, source_format: str):
    """`from_<source_format>` of backbone `model_name` ('safetensors' or 'npz')."""
    module = for_model(model_name)
    function = getattr(module, f"from_{source_format}", None)
    if function is None:
        raise ValueError(f"{module.__name__} has no from_{source_format}: model {model_name!r} cannot be "
                         f"loaded from a .{source_format} file")
    return function


class TensorTaker:
    """Hands out source tensors by name and remembers which were used.

    `check_all_used()` raises ValueError listing every source tensor that no rule consumed, so a weight
    map never silently drops part of a checkpoint.
    """

    def __init__(self, tensors: dict, *, source: str, prefix: str = ""):
        self.tensors = tensors
        self.source = source
        self.prefix = prefix
        self.used = set()

    def __contains__(self, name: str) -> bool:
        return self.prefix + name in self.tensors

    def __call__(self, name: str):
        key = self.prefix + name
        if key not in self.tensors:
            raise ValueError(f"{self.source}: missing tensor {key!r}")
        self.used.add(key)
        return self.tensors[key]

    def check_all_used(self):
        unused = sorted(set(self.tensors) - self.used)
        if unused:
            shapes = ", ".join(f"{k} {list(self.tensors[k].shape)}" for k in unused)
            raise ValueError(f"{self.source}: {len(unused)} source tensors have no counterpart in our model "
                             f"(an unsupported variant?): {shapes}")
