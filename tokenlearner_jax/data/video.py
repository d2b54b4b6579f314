"""Video datasets read from files, decoded with PyAV (FFmpeg), and video preprocessing.

Layouts (`config.dataset.data_dir` is the root), one per split:
  <root>/<split>/<class>/*.{mp4,avi,mkv,mov,webm}   a folder per class; the classes are the train
                                                     split's sub-folders, sorted
  <root>/<split>.csv   header `path,label[,start,end]`   a list, as Kinetics is distributed: path
  <root>/<split>.json  [{"path", "label"[, "start", "end"]}, ...]   relative to the root (or absolute),
                                                     label a class name, start / end in seconds (the
                                                     clip inside a longer video)
Registered as 'video_folder', 'kinetics400', 'kinetics600' and 'avid' (the same reader; the Kinetics
and AViD configs set `dataset.num_classes`, which the data must match).
Multi-label lists of videos: data/video_multilabel.py; Charades: data/charades.py.

Element i of a split is dict(image=VideoFile, label=int or list of ints): nothing is decoded until the
pipeline calls `VideoSplit.read(i, fn)`, which decodes the file and applies `fn` (the preprocessing) to
its frames; a subclass may derive the label from the frames `fn` read (`VideoSplit.label_of`, used by
data/charades.py for the actions that overlap a training clip). A
file that fails to decode is skipped: element i is replaced by the next readable file (cyclically)
with that file's label, and each bad path is logged once and counted (`VideoSplit.num_corrupt`), as
for image folders.

`VideoPreprocessor` samples `num_frames` frames `frame_stride` apart (a random start in training, the
centre in evaluation; short videos loop), then applies the image `Preprocessor` to every frame with
the same random draws, so a clip gets one crop, one flip and one shift. Evaluation can return several
views, `eval_temporal_views` clips evenly spaced in time x `eval_spatial_views` crops along the
longer side, stacked on a leading views axis; the trainer averages their logits.
"""

from collections.abc import Sequence
import copy
import csv
import dataclasses
import json
import os

import av
import ml_collections
import numpy as np

from tokenlearner_jax.data import registry
from tokenlearner_jax.data.preprocess import Preprocessor, normalize, resize, to_rgb_uint8
from tokenlearner_jax.data.source import DatasetNotFoundError, DatasetSource, Example, FirstReadable, UnreadableFile

EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".webm")
LAYOUT = (
    "expected either a folder per class, <data_dir>/<split>/<class_name>/<video>.mp4 (or .avi, .mkv, .mov, "
    ".webm), e.g. <data_dir>/train/abseiling/0001.mp4, or a list per split: <data_dir>/<split>.csv with the "
    "header path,label[,start,end] (paths relative to data_dir, label a class name, start/end in seconds "
    "inside the video) or <data_dir>/<split>.json holding [{\"path\": ..., \"label\": ...[, \"start\": ..., "
    "\"end\": ...]}]. For Kinetics: download the clips (e.g. with the cvdfoundation/kinetics-dataset "
    "scripts), then sort them into class folders or write <split>.csv from the annotation files, and set "
    "--config.dataset.data_dir"
)


def write_video(path: str, frames: np.ndarray, fps: int = 8, codec: str = "libx264", crf: int = 0):
    """Encodes uint8 `[frames, height, width, 3]` (even height and width) to `path` (yuv420p)."""
    frames = np.asarray(frames, np.uint8)
    with av.open(path, "w") as container:
        stream = container.add_stream(codec, rate=fps, options={"crf": str(crf)} if codec == "libx264" else {})
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class DecodedFrames(Sequence):
    """Decoded frames of one video; element i is uint8 `[height, width, 3]`, converted from the
    decoder's YUV frame on first access (only the sampled frames are converted, and remembered:
    `accessed` lists them).

    Attributes:
      fps: the stream's average frame rate (frames per second), for frames without a timestamp.
    """

    def __init__(self, frames: list, path: str, fps: float | None = None):
        self._frames = frames
        self._path = path
        self._rgb = {}
        self.fps = fps

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def accessed(self) -> list[int]:
        """Sorted indices of the frames read so far (the frames a preprocessor sampled)."""
        return sorted(self._rgb)

    def time(self, index: int) -> float:
        """Seconds from the first decoded frame to frame `index`: the difference of their presentation
        timestamps, or `index / fps` when the container gives none."""
        first, this = self._frames[0].time, self._frames[index].time
        if first is None or this is None:
            if not self.fps:
                raise UnreadableFile(self._path, "frames carry no timestamps and the stream no frame rate")
            return index / self.fps
        return this - first

    def __getitem__(self, index: int) -> np.ndarray:
        if index not in self._rgb:
            try:
                self._rgb[index] = self._frames[index].to_ndarray(format="rgb24")
            except (av.error.FFmpegError, ValueError) as e:
                raise UnreadableFile(self._path, f"frame {index}: {e}") from e
        return self._rgb[index]


@dataclasses.dataclass(frozen=True)
class VideoFile:
    """A video file, or the part of it from `start` to `end` seconds."""

    path: str
    start: float | None = None
    end: float | None = None

    def decode(self) -> DecodedFrames:
        """All frames of the clip; raises UnreadableFile when the file cannot be decoded."""
        frames = []
        try:
            with av.open(self.path) as container:
                if not container.streams.video:
                    raise UnreadableFile(self.path, "no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                if self.start:
                    container.seek(int(self.start / stream.time_base), stream=stream)  # the keyframe before start
                for frame in container.decode(stream):
                    time = frame.time
                    if self.start is not None and time is not None and time < self.start - 1e-6:
                        continue
                    if self.end is not None and time is not None and time >= self.end:
                        break
                    frames.append(frame)
        except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
            raise UnreadableFile(self.path, str(e)) from e
        if not frames:
            raise UnreadableFile(self.path, "no frames" + ("" if self.start is None else " in the clip"))
        return DecodedFrames(frames, self.path, float(rate) if rate else None)


class VideoSplit(Sequence):
    """One split: element i is dict(image=VideoFile, label=int, or a list of ints when multi-label);
    `read(i, fn)` decodes it."""

    def __init__(self, clips: Sequence[VideoFile], labels: Sequence, skip_corrupt: bool = True,
                 name: str = "video"):
        self._clips = list(clips)
        self._labels = list(labels)
        self._first_readable = FirstReadable(name, "video", skip_corrupt)

    @property
    def num_corrupt(self) -> int:
        """Number of distinct unreadable files met so far."""
        return self._first_readable.num_corrupt

    def __len__(self) -> int:
        return len(self._clips)

    def __getitem__(self, index: int) -> Example:
        if not 0 <= index < len(self._clips):
            raise IndexError(index)
        return {"image": self._clips[index], "label": self._labels[index]}

    def read(self, index: int, fn):
        """(fn(decoded frames), label) of element `index`, or of the next readable file when it
        cannot be decoded (the bad file is logged once and counted)."""
        return self._first_readable(index, len(self._clips), lambda j: self._read_one(j, fn))

    def _read_one(self, j: int, fn):
        frames = self._clips[j].decode()
        out = fn(frames)  # before label_of, which may look at the frames fn read
        return out, self.label_of(j, frames)

    def label_of(self, index: int, frames: DecodedFrames):
        """The label of element `index` once `fn` has read `frames`: its stored label (subclasses may
        look at `frames.accessed`)."""
        del frames
        return self._labels[index]


def class_id_map(names: Sequence[str]) -> dict[str, int]:
    """Sorted class names -> ids (numerically when every name is an integer)."""
    unique = set(names)
    key = int if all(name.lstrip("-").isdigit() for name in unique) else str
    return {name: i for i, name in enumerate(sorted(unique, key=key))}


def read_list(path: str, label_key: str, layout: str) -> list[dict]:
    """The rows of a CSV (with a header) or JSON list; ValueError naming the file and `layout` for a row
    without 'path' or `label_key`."""
    if path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
    else:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "path" not in row or label_key not in row:
            raise ValueError(f"{path}: entry {i} ({row!r}) has no 'path' and '{label_key}'; {layout}")
    return rows


def list_entry(root: str, row: dict) -> VideoFile:
    """The VideoFile of a list row: its path (relative to `root`, or absolute) and optional start / end."""
    path = row["path"] if os.path.isabs(row["path"]) else os.path.join(root, row["path"])
    return VideoFile(path, _float_or_none(row.get("start")), _float_or_none(row.get("end")))


def _float_or_none(value):
    return None if value in (None, "") else float(value)


def list_split(root: str | None, split: str, dataset: str) -> list[tuple[VideoFile, str]]:
    """[(VideoFile, class name)] of `split` under `root`, from `<split>.csv|json` or class folders."""
    if not root:
        raise DatasetNotFoundError(f"dataset {dataset!r} needs config.dataset.data_dir; {LAYOUT}")
    for ext in (".csv", ".json"):
        listing = os.path.join(root, split + ext)
        if os.path.isfile(listing):
            return [(list_entry(root, row), str(row["label"])) for row in read_list(listing, "label", LAYOUT)]
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
        raise DatasetNotFoundError(f"dataset {dataset!r}: neither {split_dir!r} nor {split_dir}.csv / .json "
                                   f"found (config.dataset.data_dir={root!r}); {LAYOUT}")
    clips = []
    for name in sorted(os.listdir(split_dir)):
        class_dir = os.path.join(split_dir, name)
        if os.path.isdir(class_dir):
            clips += [(VideoFile(os.path.join(class_dir, file)), name) for file in sorted(os.listdir(class_dir))
                      if file.lower().endswith(EXTENSIONS)]
    if not clips:
        raise DatasetNotFoundError(f"dataset {dataset!r}: no videos under {split_dir!r}; {LAYOUT}")
    return clips


@dataclasses.dataclass(frozen=True)
class VideoFileSource(DatasetSource):
    """Video files under `root`; `classes` are the train split's class names, sorted."""

    root: str
    classes: tuple[str, ...]
    skip_corrupt: bool = True
    supports_video = True  # class attribute: the pipeline reads `num_frames`-frame clips from it

    def split(self, split: str) -> VideoSplit:
        class_ids = {name: i for i, name in enumerate(self.classes)}
        clips, labels = [], []
        for clip, name in list_split(self.root, split, self.name):
            if name not in class_ids:
                raise ValueError(f"dataset {self.name!r}: class {name!r} of {clip.path!r} (split {split!r}) is not "
                                 f"one of the train split's {len(self.classes)} classes")
            clips.append(clip)
            labels.append(class_ids[name])
        return VideoSplit(clips, labels, self.skip_corrupt, name=self.name)


def require_clips(config: ml_collections.ConfigDict, name: str) -> None:
    """Raises ValueError unless `config.dataset` asks for clips (num_frames > 0)."""
    if config.num_frames <= 0:
        raise ValueError(f"config.dataset.num_frames={config.num_frames}: dataset {name!r} holds videos; set the "
                         f"frames per clip (e.g. 32)")


def build_file_source(config: ml_collections.ConfigDict, name: str, root: str | None) -> VideoFileSource:
    """The video source of `root` for `config.dataset` (which must ask for clips: num_frames > 0)."""
    require_clips(config, name)
    names = [label for _, label in list_split(root, config.train_split, name)]
    return VideoFileSource(name=name, num_classes=len(set(names)), multi_label=False, natural_images=True,
                           root=root, classes=tuple(class_id_map(names)), skip_corrupt=config.skip_corrupt_images)


for _name in ("video_folder", "kinetics400", "kinetics600", "avid"):
    registry.register(_name)(lambda config, _name=_name: build_file_source(config, _name, config.data_dir))


# ---------------------------------------------------------------------------------------------- preprocessing

@dataclasses.dataclass(frozen=True)
class VideoPreprocessor:
    """Temporal sampling plus the image `Preprocessor` on every frame.

    Attributes:
      frame: the per-frame preprocessing (crop / flip / shift, resize, normalisation).
      num_frames, frame_stride: frames per clip and the step between them, in decoded frames.
      temporal_views, spatial_views: evaluation views (clips evenly spaced in time x crops).
    """

    frame: Preprocessor
    num_frames: int
    frame_stride: int = 1
    temporal_views: int = 1
    spatial_views: int = 1

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, natural_images: bool) -> "VideoPreprocessor":
        return cls(Preprocessor.from_config(config, natural_images), config.num_frames, config.frame_stride,
                   config.eval_temporal_views, config.eval_spatial_views)

    @property
    def output_shape(self) -> tuple[int, ...]:
        """`[num_frames, S, S, 3]`: one training clip (one view)."""
        s = self.frame.image_size
        return (self.num_frames, s, s, 3)

    @property
    def eval_shape(self) -> tuple[int, ...]:
        """One evaluation example: `[views, num_frames, S, S, 3]` with several views, else one clip."""
        views = self.temporal_views * self.spatial_views
        return ((views,) if views > 1 else ()) + self.output_shape

    def _span(self) -> int:
        return (self.num_frames - 1) * self.frame_stride + 1

    def _clip(self, frames: Sequence, start: int) -> list[np.ndarray]:
        """`num_frames` frames from `start`, `frame_stride` apart; a short video loops."""
        return [to_rgb_uint8(frames[(start + i * self.frame_stride) % len(frames)]) for i in range(self.num_frames)]

    def train(self, frames: Sequence, rng: np.random.Generator) -> np.ndarray:
        """Decoded frames (uint8 `[h, w, 3]` each) -> float32 `[num_frames, S, S, 3]`, a random clip."""
        start = int(rng.integers(0, max(len(frames) - self._span(), 0) + 1))
        # Every frame gets a copy of the same generator: one crop, flip and shift for the whole clip.
        return np.stack([self.frame.train(image, copy.deepcopy(rng)) for image in self._clip(frames, start)])

    def eval(self, frames: Sequence) -> np.ndarray:
        """Decoded frames -> float32 `eval_shape`: the centred clip, or every view."""
        last_start = max(len(frames) - self._span(), 0)
        if self.temporal_views == 1:
            starts = [last_start // 2]
        else:
            starts = np.rint(np.linspace(0, last_start, self.temporal_views)).astype(int).tolist()
        views = []
        for start in starts:
            clip = self._clip(frames, start)
            for crop in range(self.spatial_views):
                views.append(np.stack([self._eval_frame(image, crop) for image in clip]))
        return views[0] if len(views) == 1 else np.stack(views)

    def _eval_frame(self, image: np.ndarray, crop: int) -> np.ndarray:
        if self.spatial_views == 1:
            return self.frame.eval(image)
        # Shorter side to S / eval_crop_fraction, then crop `crop` of `spatial_views` evenly spaced along the
        # longer side (centred across the shorter one).
        s = self.frame.image_size
        h, w = image.shape[:2]
        scale = max(s, round(s / self.frame.eval_crop_fraction)) / min(h, w)
        h, w = max(s, round(h * scale)), max(s, round(w * scale))
        image = resize(image, h, w)
        along = round(crop * (max(h, w) - s) / (self.spatial_views - 1))
        across = (min(h, w) - s) // 2
        top, left = (along, across) if h >= w else (across, along)
        return normalize(image[top:top + s, left:left + s], self.frame.normalize_mode)
