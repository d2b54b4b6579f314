"""Multi-label video lists ('video_folder_multilabel'): each clip has a set of classes.

Layout (`config.dataset.data_dir` is the root), a list per split:
  <root>/<split>.csv   header `path,labels[,start,end]`: labels are the clip's class names separated by
                       ';' (empty: none of the classes), e.g. `clips/0001.mp4,cat;dog`; paths relative
                       to the root (or absolute); start / end in seconds inside the video
  <root>/<split>.json  [{"path", "labels": [names...][, "start", "end"]}, ...]
  <root>/classes.txt   optional: one class name a line, in class-id order. Without it the classes are
                       the train split's names, sorted (numerically when all are integers), and a class
                       met only in another split is an error naming the file.
Element i of a split is dict(image=VideoFile, label=sorted list of class ids); the pipeline turns the
label into a float32 multi-hot `[num_classes]` target. Videos are decoded with PyAV and unreadable
files skipped and counted as for every video dataset (data/video.py).
"""

import dataclasses
import os

import ml_collections

from tokenlearner_jax.data import registry, video
from tokenlearner_jax.data.source import DatasetNotFoundError, DatasetSource
from tokenlearner_jax.data.video import VideoFile, VideoSplit

LAYOUT = (
    "expected a list per split: <data_dir>/<split>.csv with the header path,labels[,start,end] (paths relative "
    "to data_dir, labels the clip's class names separated by ';', empty for none, start/end in seconds inside "
    "the video), e.g. clips/0001.mp4,cat;dog, or <data_dir>/<split>.json holding [{\"path\": ..., \"labels\": "
    "[...]}]; optionally <data_dir>/classes.txt with one class name a line, in class-id order"
)
CLASSES_FILE = "classes.txt"


def _label_names(labels, listing: str) -> list[str]:
    """'a;b' (CSV) or ['a', 'b'] (JSON) -> ['a', 'b']."""
    if isinstance(labels, str):
        return [name.strip() for name in labels.split(";") if name.strip()]
    if isinstance(labels, list):
        return [str(name) for name in labels]
    raise ValueError(f"{listing}: labels {labels!r} are neither 'a;b' nor a list of names; {LAYOUT}")


def list_multilabel_split(root: str | None, split: str, dataset: str) -> list[tuple[VideoFile, list[str]]]:
    """[(VideoFile, class names)] of `split` under `root`, from `<split>.csv|json`."""
    if not root:
        raise DatasetNotFoundError(f"dataset {dataset!r} needs config.dataset.data_dir; {LAYOUT}")
    for ext in (".csv", ".json"):
        listing = os.path.join(root, split + ext)
        if os.path.isfile(listing):
            return [(video.list_entry(root, row), _label_names(row["labels"], listing))
                    for row in video.read_list(listing, "labels", LAYOUT)]
    raise DatasetNotFoundError(f"dataset {dataset!r}: neither {os.path.join(root, split)}.csv nor .json found "
                               f"(config.dataset.data_dir={root!r}); {LAYOUT}")


@dataclasses.dataclass(frozen=True)
class MultiLabelVideoSource(DatasetSource):
    """Listed video files under `root`, each with a set of classes; labels are sorted lists of class ids."""

    root: str
    classes: tuple[str, ...]
    skip_corrupt: bool = True
    supports_video = True

    def split(self, split: str) -> VideoSplit:
        class_ids = {name: i for i, name in enumerate(self.classes)}
        clips, labels = [], []
        for clip, names in list_multilabel_split(self.root, split, self.name):
            unknown = [name for name in names if name not in class_ids]
            if unknown:
                raise ValueError(f"dataset {self.name!r}: classes {unknown} of {clip.path!r} (split {split!r}) are not "
                                 f"among the {len(self.classes)} classes; list every class in "
                                 f"{os.path.join(self.root, CLASSES_FILE)}")
            clips.append(clip)
            labels.append(sorted({class_ids[name] for name in names}))
        return VideoSplit(clips, labels, self.skip_corrupt, name=self.name)


def read_class_names(path: str) -> tuple[str, ...]:
    """Class names, one a line (blank lines ignored), in class-id order; ValueError on a repeated name."""
    with open(path, encoding="utf-8") as f:
        names = tuple(line.strip() for line in f if line.strip())
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{path}: classes {repeated} are listed more than once")
    return names


def build_multilabel_source(config: ml_collections.ConfigDict, name: str, root: str | None,
                            natural_images: bool = True) -> MultiLabelVideoSource:
    """The multi-label video source of `root`; classes from `root/classes.txt`, else the train split's."""
    video.require_clips(config, name)
    train = list_multilabel_split(root, config.train_split, name)
    classes_file = os.path.join(root, CLASSES_FILE)
    if os.path.isfile(classes_file):
        classes = read_class_names(classes_file)
    else:
        classes = tuple(video.class_id_map([label for _, names in train for label in names]))
    return MultiLabelVideoSource(name=name, num_classes=len(classes), multi_label=True,
                                 natural_images=natural_images, root=root, classes=classes,
                                 skip_corrupt=config.skip_corrupt_images)


registry.register("video_folder_multilabel")(
    lambda config: build_multilabel_source(config, "video_folder_multilabel", config.data_dir))
