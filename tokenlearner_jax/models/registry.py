"""Models by name: `build(config.model)` returns the Flax module of the section's `name`.

A backbone file registers a builder `(model_config) -> nn.Module` with `@register(name, default_config)`,
where `default_config()` returns every field of its `config.model` section with its default. Config
files start from those defaults with `config(name, **overrides)`, so that a command-line override of
a field the backbone does not have is rejected before anything runs.
"""

import copy
from typing import Callable, Dict, Tuple

import flax.linen as nn
import ml_collections

DTYPES = ("float32", "bfloat16", "float16")
_MODELS: Dict[str, Tuple[Callable, Callable[[], dict]]] = {}


def register(name: str, default_config: Callable[[], dict]):
    def wrap(builder):
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = (builder, default_config)
        return builder
    return wrap


def names():
    return sorted(_MODELS)


def _entry(name):
    if name not in _MODELS:
        raise ValueError(f"config.model.name={name!r} is not a registered model; choose one of {names()}")
    return _MODELS[name]


def _merge(defaults: dict, overrides: dict, path: str) -> dict:
    merged = copy.deepcopy(defaults)
    for key, value in overrides.items():
        if key not in merged:
            raise ValueError(f"{path}.{key}: not a field of this model (fields: {sorted(merged)})")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = _merge(merged[key], value, f"{path}.{key}")
        elif isinstance(merged[key], float) and isinstance(value, int) and not isinstance(value, bool):
            merged[key] = float(value)  # keeps the field a float, so that later overrides may be fractions
        else:
            merged[key] = value
    return merged


def config(name: str, **overrides) -> ml_collections.ConfigDict:
    """`config.model` for backbone `name`: its defaults with `overrides` (nested sections as dicts)."""
    defaults = dict(_entry(name)[1](), name=name)
    config = ml_collections.ConfigDict(_merge(defaults, overrides, "config.model"))
    config.lock()  # a field the backbone does not have is an error, not a silent addition
    return config


def build(model_config) -> nn.Module:
    """The Flax module for `model_config.name`, applied as `module.apply(variables, inputs, train=False)`
    on float32 images `[batch, height, width, channels]` (videos `[batch, frames, height, width,
    channels]`), returning logits `[batch, num_classes]`."""
    return _entry(model_config.get("name"))[0](model_config)


def check(ok: bool, field: str, value, expected: str) -> None:
    """Raises ValueError "config.model.<field>=<value>: expected <expected>" unless `ok`."""
    if not ok:
        raise ValueError(f"config.model.{field}={value!r}: expected {expected}")


def check_common(model_config) -> None:
    """The fields most backbones share: dropout and drop-path rates in [0, 1) and the dtype."""
    for field in ("dropout_rate", "attention_dropout_rate", "drop_path_rate"):
        if field in model_config and model_config[field] != -1:
            check(0 <= model_config[field] < 1, field, model_config[field],
                  "in [0, 1)" + (" (-1: the variant's)" if field == "drop_path_rate" else ""))
    if "dtype" in model_config:
        check(model_config.dtype in DTYPES, "dtype", model_config.dtype, f"one of {DTYPES}")


def validate(model_config, input_shape) -> None:
    """Builds the model (its builder checks every field) and checks that it accepts inputs of
    `input_shape` (one example, e.g. (224, 224, 3)); raises ValueError naming the config field."""
    model = build(model_config)
    check = getattr(model, "check_input", None)
    if check is not None:
        check(tuple(input_shape))
