"""Models by name: `build(config.model)` returns a Flax module for the section's `name`.

A backbone registers itself with `@register("name")` on a function `(model_config) -> nn.Module`.
"""

from typing import Callable, Dict

import flax.linen as nn

_BUILDERS: Dict[str, Callable] = {}


def register(name: str):
    def wrap(builder):
        if name in _BUILDERS:
            raise ValueError(f"model {name!r} is registered twice")
        _BUILDERS[name] = builder
        return builder
    return wrap


def names():
    return sorted(_BUILDERS)


def build(model_config) -> nn.Module:
    """The Flax module for `model_config.name`, applied as `module.apply(variables, images, train=False)`
    on float32 images `[batch, height, width, channels]`, returning logits `[batch, num_classes]`."""
    name = model_config.get("name")
    if name not in _BUILDERS:
        raise ValueError(f"config.model.name={name!r} is not a registered model; choose one of {names()}")
    return _BUILDERS[name](model_config)
