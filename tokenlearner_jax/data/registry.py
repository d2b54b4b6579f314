"""Dataset registry: maps `config.dataset.name` to a `DatasetSource` builder.

Names not in the registry are treated as TFDS dataset names.
"""

from collections.abc import Callable

import ml_collections

from tokenlearner_jax.data import tfds_source
from tokenlearner_jax.data.source import DatasetSource

SourceBuilder = Callable[[ml_collections.ConfigDict], DatasetSource]

_REGISTRY: dict[str, SourceBuilder] = {}


def register(name: str) -> Callable[[SourceBuilder], SourceBuilder]:
    """Decorator registering `builder(dataset_config) -> DatasetSource`."""

    def decorator(builder: SourceBuilder) -> SourceBuilder:
        if name in _REGISTRY:
            raise ValueError(f"dataset {name!r} is already registered")
        _REGISTRY[name] = builder
        return builder

    return decorator


def names() -> list[str]:
    """Sorted names of the registered (non-TFDS) datasets."""
    return sorted(_REGISTRY)


def get_source(config: ml_collections.ConfigDict) -> DatasetSource:
    """Builds the source for `config.name` (registry first, then TFDS)."""
    builder = _REGISTRY.get(config.name)
    if builder is None:
        return tfds_source.build(config, registered=names())
    return builder(config)
