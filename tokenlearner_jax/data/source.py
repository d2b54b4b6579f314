"""Dataset source interface shared by every dataset in the registry.

A `DatasetSource` describes a dataset (classes, label kind, image kind) and
hands out random-access splits. A split is a sequence whose element `i` is an
`Example` dict:

  image: uint8 [h, w, 3] (any h, w; preprocessing resizes)
  label: int class id, or int [k] class ids when the dataset is multi-label.
"""

import abc
from collections.abc import Sequence
import dataclasses
from typing import Any

Example = dict[str, Any]


class DatasetNotFoundError(ValueError):
    """The requested dataset is not prepared where the pipeline looked for it."""


@dataclasses.dataclass(frozen=True)
class DatasetSource(abc.ABC):
    """A dataset: class metadata plus random-access splits.

    Attributes:
      name: Dataset name as given in `config.dataset.name`.
      num_classes: Number of classes.
      multi_label: Whether labels are sets of class ids (multi-hot targets).
      natural_images: Whether eval preprocessing uses resize + central crop
        (natural photographs) instead of a plain resize (digits, synthetic).
    """

    name: str
    num_classes: int
    multi_label: bool
    natural_images: bool

    @abc.abstractmethod
    def split(self, split: str) -> Sequence[Example]:
        """Returns split `split` as a random-access sequence of `Example`s."""
