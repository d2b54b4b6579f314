"""Image-folder dataset: `<data_dir>/<split>/<class>/*.{jpg,jpeg,png}`.

Classes are the sorted subdirectory names of the train split; a class folder of
the train split without any image is an error (it would be a class that never
occurs). Files that fail to decode are logged once and counted
(`ImageFolderSplit.num_corrupt`); in training element i is replaced by the next
readable file (cyclically) with that file's label, in evaluation it is left out
(see source.FirstReadable).
"""

from collections.abc import Sequence
import dataclasses
import os

import ml_collections
import numpy as np
from PIL import Image

from tokenlearner_jax.data import registry
from tokenlearner_jax.data.source import DatasetNotFoundError, DatasetSource, Example, FirstReadable, UnreadableFile

EXTENSIONS = (".jpg", ".jpeg", ".png")
_LAYOUT = (
    "expected layout <data_dir>/<split>/<class_name>/<image>.{jpg,jpeg,png},"
    " e.g. <data_dir>/train/cat/0001.jpg"
)


def _split_dir(root: str | None, split: str) -> str:
    if not root:
        raise DatasetNotFoundError(
            "dataset 'image_folder' needs config.dataset.data_dir to be set; " + _LAYOUT
        )
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise DatasetNotFoundError(
            f"dataset 'image_folder': split directory {path!r} not found in" f" {root!r}; {_LAYOUT}"
        )
    return path


def _class_dirs(split_dir: str) -> list[str]:
    return sorted(d for d in os.listdir(split_dir) if os.path.isdir(os.path.join(split_dir, d)))


def _images(class_dir: str) -> list[str]:
    return sorted(file for file in os.listdir(class_dir) if file.lower().endswith(EXTENSIONS))


class ImageFolderSplit(Sequence):
    """One split; element i is dict(image=uint8 [h, w, 3], label=int)."""

    def __init__(self, split_dir: str, classes: Sequence[str], skip_corrupt: bool = True):
        class_ids = {name: i for i, name in enumerate(classes)}
        paths, labels = [], []
        for name in _class_dirs(split_dir):
            if name not in class_ids:
                raise ValueError(
                    f"class directory {os.path.join(split_dir, name)!r} is not a class"
                    f" of the train split ({len(classes)} classes)"
                )
            class_dir = os.path.join(split_dir, name)
            for file in _images(class_dir):
                paths.append(os.path.join(class_dir, file))
                labels.append(class_ids[name])
        if not paths:
            raise DatasetNotFoundError(f"dataset 'image_folder': no images under {split_dir!r}; {_LAYOUT}")
        self._paths = paths
        self._labels = labels
        self.first_readable = FirstReadable("image_folder", "image", skip_corrupt)

    @property
    def num_corrupt(self) -> int:
        """Number of distinct unreadable files met so far."""
        return self.first_readable.num_corrupt

    def __len__(self) -> int:
        return len(self._paths)

    def _read(self, index: int) -> Example:
        path = self._paths[index]
        try:
            with Image.open(path) as img:
                return {"image": np.asarray(img.convert("RGB")), "label": self._labels[index]}
        except (OSError, ValueError, Image.DecompressionBombError) as e:
            raise UnreadableFile(path, str(e)) from e

    def __getitem__(self, index: int) -> Example:
        return self.first_readable(index, len(self._paths), self._read)


@dataclasses.dataclass(frozen=True)
class ImageFolderSource(DatasetSource):
    """Splits are subdirectories of `root`; `classes` are the train split's."""

    root: str
    classes: tuple[str, ...]
    skip_corrupt: bool = True

    def split(self, split: str) -> ImageFolderSplit:
        return ImageFolderSplit(_split_dir(self.root, split), self.classes, self.skip_corrupt)


@registry.register("image_folder")
def build(config: ml_collections.ConfigDict) -> ImageFolderSource:
    train_dir = _split_dir(config.data_dir, config.train_split)
    classes = _class_dirs(train_dir)
    if not classes:
        raise DatasetNotFoundError(
            f"dataset 'image_folder': no class directories in {train_dir!r};" f" {_LAYOUT}"
        )
    empty = [name for name in classes if not _images(os.path.join(train_dir, name))]
    if empty:
        raise ValueError(
            f"dataset 'image_folder': class folder {os.path.join(train_dir, empty[0])!r}"
            f"{f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''} holds no image (.jpg, .jpeg, .png); "
            "add images or remove the folder, since every class folder of the train split is a class"
        )
    return ImageFolderSource(
        name="image_folder",
        num_classes=len(classes),
        multi_label=False,
        natural_images=True,
        root=config.data_dir,
        classes=tuple(classes),
        skip_corrupt=config.skip_corrupt_images,
    )
