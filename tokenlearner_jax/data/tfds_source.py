"""TFDS datasets read with random access from prepared array_record files.

Never downloads or prepares anything: a dataset that is not prepared in
array_record format raises `DatasetNotFoundError` with instructions.
"""

from collections.abc import Sequence
import dataclasses
from typing import Any

import ml_collections
import numpy as np

from tokenlearner_jax.data import preprocess
from tokenlearner_jax.data.source import DatasetNotFoundError, DatasetSource
from tokenlearner_jax.data.source import Example


def _prepare_hint(name: str, data_dir: str) -> str:
    return (
        f"prepare it with `tfds build {name} --file_format=array_record"
        f" --data_dir={data_dir}` (datasets with a manual download, e.g."
        f" ImageNet, need the downloaded files placed in"
        f" {data_dir}/downloads/manual first)"
    )


@dataclasses.dataclass(frozen=True)
class _TfdsSplit(Sequence):
    """A TFDS data source; element i is dict(image=uint8 [h, w, 3], label) (label 0 when unlabelled)."""

    data_source: Sequence[dict[str, Any]]
    labelled: bool = True

    def __len__(self) -> int:
        return len(self.data_source)

    def __getitem__(self, index: int) -> Example:
        record = self.data_source[index]
        label = record["label"] if self.labelled else 0
        label = np.asarray(label, np.int64) if np.ndim(label) else int(label)
        return {"image": preprocess.to_rgb_uint8(record["image"]), "label": label}


@dataclasses.dataclass(frozen=True)
class TfdsSource(DatasetSource):
    """Any prepared TFDS dataset with an 'image' feature and, unless it is unlabelled (num_classes 0, for
    tasks that need no labels: celeb_a for the gan task), a 'label' feature."""

    builder: Any  # tfds.core.DatasetBuilder

    @property
    def class_names(self) -> tuple[str, ...]:
        """The names of the dataset's ClassLabel, from its metadata (none when unlabelled)."""
        if not self.num_classes:
            return ()
        label = self.builder.info.features["label"]
        return tuple(getattr(label, "feature", label).names)

    def split(self, split: str) -> _TfdsSplit:
        # Imported lazily: only TFDS datasets pay for importing TFDS.
        import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

        decoders = None
        if isinstance(self.builder.info.features["image"], tfds.features.Image):
            # Encoded bytes are decoded with PIL in preprocess.to_rgb_uint8.
            decoders = {"image": tfds.decode.SkipDecoding()}
        try:
            data_source = self.builder.as_data_source(
                split=split, decoders=decoders, file_format="array_record"
            )
        except (KeyError, ValueError) as e:
            splits = sorted(self.builder.info.splits)
            raise ValueError(
                f"dataset {self.name!r}: cannot read split {split!r} (splits:" f" {splits}): {e}"
            ) from e
        return _TfdsSplit(data_source, labelled=self.num_classes > 0)


def build(config: ml_collections.ConfigDict, registered: Sequence[str]) -> TfdsSource:
    """Opens prepared TFDS dataset `config.name` (never downloads)."""
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

    name = config.name
    try:
        builder = tfds.builder(name, data_dir=config.data_dir, try_gcs=False)
    except tfds.core.registered.DatasetNotFoundError as e:
        raise DatasetNotFoundError(
            f"config.dataset.name={name!r}: expected a dataset registered here ({', '.join(registered)}) "
            f"or a TFDS dataset name"
        ) from e
    data_dir = str(builder.data_dir_root)
    if not builder.is_prepared():
        raise DatasetNotFoundError(
            f"dataset {name!r} not found in {data_dir}: " + _prepare_hint(name, data_dir)
        )
    formats = [builder.info.file_format, *builder.info.alternative_file_formats]
    if tfds.core.FileFormat.ARRAY_RECORD not in formats:
        raise DatasetNotFoundError(
            f"dataset {name!r} in {data_dir} is prepared as"
            f" {[f.value for f in formats]} only, random access needs"
            " array_record: " + _prepare_hint(name, data_dir)
        )
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"dataset {name!r} needs an 'image' feature, has {sorted(features)}")
    if "label" not in features:  # e.g. celeb_a: only tasks that need no labels can use it
        return TfdsSource(name=name, num_classes=0, multi_label=False, natural_images=True, builder=builder)
    label = features["label"]
    multi_label = isinstance(label, tfds.features.Sequence)
    class_label = label.feature if multi_label else label
    if not isinstance(class_label, tfds.features.ClassLabel):
        raise ValueError(
            f"dataset {name!r}: 'label' must be a ClassLabel or a Sequence of" f" ClassLabel, got {label!r}"
        )
    return TfdsSource(
        name=name,
        num_classes=class_label.num_classes,
        multi_label=multi_label,
        natural_images=True,
        builder=builder,
    )
