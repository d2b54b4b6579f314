"""Dataset source interface shared by every dataset in the registry.

A `DatasetSource` describes a dataset (classes, label kind, image kind) and
hands out random-access splits. A split is a sequence whose element `i` is an
`Example` dict:

  image: uint8 [h, w, 3] (any h, w; preprocessing resizes)
  label: int class id, or int [k] class ids when the dataset is multi-label.
"""

import abc
from collections.abc import Callable, Sequence
import dataclasses
import threading
from typing import Any

from absl import logging

Example = dict[str, Any]


class DatasetNotFoundError(ValueError):
    """The requested dataset is not prepared where the pipeline looked for it."""


class UnreadableFile(Exception):
    """A file of a dataset that cannot be opened or decoded."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path} ({reason})")
        self.path = path


class SkippedFile(Exception):
    """An unreadable file that a reader in exact mode leaves out instead of replacing it."""

    def __init__(self, path: str):
        super().__init__(path)
        self.path = path


class FirstReadable:
    """Reads element i of a split of files. An unreadable file is logged once and counted, and then:
    - in training (`substitute`, the default), replaced by the next readable file (cyclically), so a
      corrupt file never stops a run and every batch stays full;
    - in evaluation (`substitute=False`, set by the eval pipeline), left out: the call raises
      SkippedFile, and the pipeline masks the example out and counts it, so no file is counted twice
      and no label is taken from a neighbour.
    With `skip=False` the first unreadable file stops the run, naming it.

    A split that reads files exposes its reader as `split.first_readable`; data/pipeline.py's
    eval_batches switches it to exact mode.

    Attributes:
      dataset: the dataset's name, for messages.
      kind: what a file holds ('image', 'video'), for messages.
      skip: skip unreadable files (config.dataset.skip_corrupt_images).
      substitute: replace an unreadable file by the next readable one (training) rather than raise
        SkippedFile (evaluation).
    """

    def __init__(self, dataset: str, kind: str, skip: bool, substitute: bool = True):
        self.dataset, self.kind, self.skip, self.substitute = dataset, kind, skip, substitute
        self._corrupt: set[str] = set()
        self._lock = threading.Lock()

    @property
    def num_corrupt(self) -> int:
        """Number of distinct unreadable files met so far."""
        with self._lock:
            return len(self._corrupt)

    def __call__(self, index: int, count: int, read: Callable[[int], Any]):
        """read(j) for j = index, index + 1, ... (mod count): the first that does not raise UnreadableFile;
        only j = index without `substitute`."""
        if not 0 <= index < count:
            raise IndexError(index)
        for offset in range(count if self.substitute else 1):
            j = (index + offset) % count
            try:
                return read(j)
            except UnreadableFile as e:
                if not self.skip:
                    raise ValueError(f"{self.dataset}: unreadable {self.kind} {e}; set "
                                     f"config.dataset.skip_corrupt_images=True to skip such files") from e
                with self._lock:
                    first_time = e.path not in self._corrupt
                    self._corrupt.add(e.path)
                    skipped = len(self._corrupt)
                if first_time:
                    logging.warning("%s: skipping unreadable %s %s; %d skipped so far", self.dataset, self.kind, e,
                                    skipped)
                if not self.substitute:
                    raise SkippedFile(e.path) from e
        raise ValueError(f"{self.dataset}: no readable {self.kind} among {count} files")


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

    @property
    def class_names(self) -> tuple[str, ...]:
        """The name of every class id: the folder names of a source with `classes` (image and video
        folders, the moving digits' '<digit>_<direction>'), otherwise the id itself (the digits)."""
        return tuple(getattr(self, "classes", None) or (str(i) for i in range(self.num_classes)))
