"""Charades (Sigurdsson et al., ECCV 2016): 157 action classes, several per video, each annotated with
the time interval in which it happens.

Layout under `config.dataset.data_dir` (the files of the official release):
  Charades_v1_train.csv, Charades_v1_test.csv   the annotations, one row per video: columns id, ...,
      actions ('c092 11.90 21.20;c147 0.00 12.60': class, start and end in seconds; empty when none),
      length (seconds)
  Charades_v1_classes.txt                       'c000 Holding some clothes', one class a line
  Charades_v1_480/<id>.mp4                      the videos (Charades_v1_480.zip; or the original-size
                                                Charades_v1/<id>.mp4, used when Charades_v1_480 is absent)
Splits are 'train' and 'test' (config.dataset.train_split / eval_split); the class ids follow the
codes (c000 -> 0, ..., c156 -> 156).

Labels:
- the training split (config.dataset.train_split): a clip's label is the set of actions whose interval
  overlaps the clip's time span. The span runs from the timestamp of the first frame the preprocessing
  sampled to that of the last plus one frame's duration (1 / fps): [t_first, t_last + 1 / fps). An
  action [start, end] overlaps it when start < t_last + 1 / fps and end > t_first. Timestamps are the
  decoded frames' presentation times, counted from the video's first frame (index / fps when the
  container has none), so variable frame rates and `frame_stride` are taken into account exactly.
- every other split: a video's label is its full set of actions, whatever frames are read; the several
  evaluation clips of a video (config.dataset.eval_temporal_views) are aggregated by the task.
Element i of a split is dict(image=VideoFile, label=the video's sorted class ids). Unreadable or
missing videos are skipped and counted (data/source.FirstReadable, via data/video.VideoSplit).
"""

import csv
import dataclasses
import os

import ml_collections

from tokenlearner_jax.data import registry, video
from tokenlearner_jax.data.source import DatasetNotFoundError, DatasetSource
from tokenlearner_jax.data.video import DecodedFrames, VideoFile, VideoSplit

NAME = "charades"
SPLITS = ("train", "test")
CLASSES_FILE = "Charades_v1_classes.txt"
VIDEO_DIRS = ("Charades_v1_480", "Charades_v1")
LAYOUT = (
    "expected the Charades release under config.dataset.data_dir: <data_dir>/Charades_v1_train.csv and "
    "<data_dir>/Charades_v1_test.csv (the annotations, with the columns id and actions), "
    "<data_dir>/Charades_v1_classes.txt (lines 'c000 Holding some clothes') and the videos as "
    "<data_dir>/Charades_v1_480/<id>.mp4 (from Charades_v1_480.zip, or Charades_v1/<id>.mp4), "
    "from https://prior.allenai.org/projects/charades"
)


@dataclasses.dataclass(frozen=True)
class Action:
    """One annotated action of a video: class id and interval in seconds."""

    label: int
    start: float
    end: float


def annotation_file(root: str, split: str) -> str:
    return os.path.join(root, f"Charades_v1_{split}.csv")


def read_classes(path: str) -> tuple[str, ...]:
    """Class codes ('c000', ...) in file order from Charades_v1_classes.txt."""
    codes = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                code = line.split()[0]
                if not (code[0] == "c" and code[1:].isdigit()):
                    raise ValueError(f"{path}: line {number} ({line.strip()!r}) does not start with a class code "
                                     f"such as c000; {LAYOUT}")
                codes.append(code)
    return tuple(codes)


def parse_actions(actions: str, class_ids: dict[str, int], where: str) -> list[Action]:
    """'c092 11.90 21.20;c147 0.00 12.60' -> [Action(92, 11.9, 21.2), Action(147, 0.0, 12.6)]."""
    parsed = []
    for item in filter(None, (part.strip() for part in (actions or "").split(";"))):
        fields = item.split()
        if len(fields) != 3 or fields[0] not in class_ids:
            raise ValueError(f"{where}: action {item!r} is not '<class code> <start> <end>' with a code of "
                             f"{CLASSES_FILE}")
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError as e:
            raise ValueError(f"{where}: action {item!r} has a non-numeric start or end") from e
        parsed.append(Action(class_ids[fields[0]], start, end))
    return parsed


def overlapping(actions: list[Action], start: float, end: float) -> list[int]:
    """Sorted class ids of the actions overlapping the time span [start, end)."""
    return sorted({a.label for a in actions if a.start < end and a.end > start})


class CharadesSplit(VideoSplit):
    """A Charades split; with `clip_labels` the label of a read clip is the set of actions overlapping
    the span of the frames the preprocessing sampled, else the video's whole set."""

    def __init__(self, clips: list[VideoFile], actions: list[list[Action]], clip_labels: bool,
                 skip_corrupt: bool):
        super().__init__(clips, [sorted({a.label for a in acts}) for acts in actions], skip_corrupt, name=NAME)
        self._actions = actions
        self.clip_labels = clip_labels

    def label_of(self, index: int, frames: DecodedFrames) -> list[int]:
        accessed = frames.accessed
        if not self.clip_labels or not accessed:
            return super().label_of(index, frames)
        start = frames.time(accessed[0])
        end = frames.time(accessed[-1]) + (1.0 / frames.fps if frames.fps else 0.0)
        return overlapping(self._actions[index], start, end)


@dataclasses.dataclass(frozen=True)
class CharadesSource(DatasetSource):
    """Charades under `root`: `classes` the class codes, videos in `video_dir`."""

    root: str
    video_dir: str
    classes: tuple[str, ...]
    train_split: str
    skip_corrupt: bool = True
    supports_video = True

    def split(self, split: str) -> CharadesSplit:
        if split not in SPLITS:
            raise ValueError(f"dataset {NAME!r}: split {split!r} (config.dataset.train_split / eval_split): "
                             f"expected one of {SPLITS}")
        path = annotation_file(self.root, split)
        if not os.path.isfile(path):
            raise DatasetNotFoundError(f"dataset {NAME!r}: {path} not found; {LAYOUT}")
        class_ids = {code: i for i, code in enumerate(self.classes)}
        clips, actions = [], []
        with open(path, encoding="utf-8", newline="") as f:
            for row_number, row in enumerate(csv.DictReader(f), 2):
                if "id" not in row or "actions" not in row:
                    raise ValueError(f"{path}: no 'id' and 'actions' columns; {LAYOUT}")
                clips.append(VideoFile(os.path.join(self.video_dir, row["id"] + ".mp4")))
                actions.append(parse_actions(row["actions"], class_ids, f"{path} line {row_number}"))
        return CharadesSplit(clips, actions, clip_labels=split == self.train_split, skip_corrupt=self.skip_corrupt)


@registry.register(NAME)
def build(config: ml_collections.ConfigDict) -> CharadesSource:
    """The Charades source under `config.data_dir`; DatasetNotFoundError naming the layout when absent."""
    video.require_clips(config, NAME)
    for field in ("train_split", "eval_split"):
        if config[field] not in SPLITS:
            raise ValueError(f"config.dataset.{field}={config[field]!r}: dataset {NAME!r} has the splits {SPLITS}")
    root = config.data_dir
    if not root:
        raise DatasetNotFoundError(f"dataset {NAME!r} needs config.dataset.data_dir; {LAYOUT}")
    classes_file = os.path.join(root, CLASSES_FILE)
    missing = [path for path in (classes_file, annotation_file(root, config.train_split)) if not os.path.isfile(path)]
    video_dirs = [os.path.join(root, name) for name in VIDEO_DIRS if os.path.isdir(os.path.join(root, name))]
    if not video_dirs:
        missing.append(os.path.join(root, VIDEO_DIRS[0]) + "/")
    if missing:
        raise DatasetNotFoundError(f"dataset {NAME!r}: {', '.join(missing)} not found "
                                   f"(config.dataset.data_dir={root!r}); {LAYOUT}")
    classes = read_classes(classes_file)
    return CharadesSource(name=NAME, num_classes=len(classes), multi_label=True, natural_images=True, root=root,
                          video_dir=video_dirs[0], classes=classes, train_split=config.train_split,
                          skip_corrupt=config.skip_corrupt_images)
