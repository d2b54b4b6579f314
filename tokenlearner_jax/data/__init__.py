"""Input pipelines: dataset registry, preprocessing and grain iterators.

Public API:
  default_dataset_config() -> ConfigDict for `config.dataset`.
  get_info(dataset_config) -> DatasetInfo.
  train_iterator(dataset_config, *, global_batch_size, seed, process_index=0,
                 process_count=1) -> checkpointable iterator of
                 dict(image=float32 [B, H, W, C] (videos [B, T, H, W, C]),
                 label=int32 [B] or float32 [B, num_classes]).
  eval_batches(dataset_config, *, global_batch_size, process_index=0,
               process_count=1, split=None) -> finite iterator of
               dict(image, label, mask=float32 [B]).
  register(name) / names(): the dataset registry.
  validate(dataset_config): raises ValueError naming a bad field.
"""

# Importing the dataset modules registers them.
from tokenlearner_jax.data import canvas_digits  # noqa: F401
from tokenlearner_jax.data import charades  # noqa: F401
from tokenlearner_jax.data import digits  # noqa: F401
from tokenlearner_jax.data import image_folder  # noqa: F401
from tokenlearner_jax.data import synthetic  # noqa: F401
from tokenlearner_jax.data import video  # noqa: F401
from tokenlearner_jax.data import video_digits  # noqa: F401
from tokenlearner_jax.data import video_multilabel  # noqa: F401
from tokenlearner_jax.data.config import default_dataset_config, example_shape, validate
from tokenlearner_jax.data.pipeline import DatasetInfo
from tokenlearner_jax.data.pipeline import eval_batches
from tokenlearner_jax.data.pipeline import get_info
from tokenlearner_jax.data.pipeline import train_iterator
from tokenlearner_jax.data.registry import names
from tokenlearner_jax.data.registry import register
from tokenlearner_jax.data.source import DatasetNotFoundError
from tokenlearner_jax.data.source import DatasetSource

__all__ = [
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetSource",
    "default_dataset_config",
    "eval_batches",
    "example_shape",
    "get_info",
    "names",
    "register",
    "train_iterator",
    "validate",
]
