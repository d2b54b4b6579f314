"""Moving digits: scikit-learn's digits moving across a black canvas, as real video files (no download).

'moving_digits' (single-label): each image of the fixed digits split (data/digits.py: 1,437 train /
360 test) gives one clip per direction of motion (right, left, down, up): 16 frames of 32x32, the
digit upscaled to 12x12 and moving one pixel per frame, starting from a position drawn from a
generator seeded by (split, image, direction) such that the digit stays on the canvas. The class is
'<digit>_<direction>' (40 classes, 5,748 train and 1,440 test clips); one frame shows the digit but
not where it is going, so the direction needs time.

'moving_digits_multilabel': 3,000 train and 600 test clips of 16 frames of 64x64, each with one to
three digits of distinct classes (drawn from that split's images), upscaled to 16x16 and each moving
two pixels per frame in its own direction; overlapping digits are blended by the brighter pixel. Clip
i of a split is drawn from a generator seeded by (split, i). The label is the set of digits present
(10 classes, '0'..'9'); with `config.dataset.moving_digits_directions=True` also the set of their
directions of motion (4 more classes, 'right', 'left', 'down', 'up': 14 in all).

The clips are written once, on first use, as H.264 mp4 files (crf 0) under `config.dataset.data_dir`
or else `$TOKENLEARNER_JAX_CACHE` (default ~/.cache/tokenlearner_jax), in `moving_digits_v1/` (the
class-folder layout of data/video.py) and `moving_digits_multilabel_v1/` (clips/<split>/<i>.mp4 with
the lists of data/video_multilabel.py in digits/ and digits_and_directions/), and then read back like
any user video dataset, through the same decoder. Generation takes about a minute each; a finished
cache is marked by a `COMPLETE` file, and concurrent writers (several processes) each write a private
copy and rename it into place, so readers never see a partial cache.
"""

from collections.abc import Callable
import csv
import os
import shutil
import tempfile

import ml_collections
import numpy as np

from tokenlearner_jax.data import digits, registry, video, video_multilabel
from tokenlearner_jax.data.preprocess import resize

NAME = "moving_digits_v1"
NUM_FRAMES = 16
CANVAS = 32
DIGIT_SIZE = 12
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx) per frame
_SPLIT_IDS = {"train": 0, "test": 1}

MULTILABEL_NAME = "moving_digits_multilabel_v1"
MULTILABEL_CANVAS = 64
MULTILABEL_DIGIT_SIZE = 16
MULTILABEL_SPEED = 2  # pixels per frame
MULTILABEL_CLIPS = {"train": 3000, "test": 600}
MAX_DIGITS = 3
LABELINGS = {"digits": tuple(str(d) for d in range(10)),
             "digits_and_directions": tuple(str(d) for d in range(10)) + tuple(DIRECTIONS)}


def default_root(name: str = NAME) -> str:
    base = os.environ.get("TOKENLEARNER_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                       "tokenlearner_jax")
    return os.path.join(base, name)


def paint_moving(clip: np.ndarray, digit: np.ndarray, direction: str, speed: int, rng: np.random.Generator):
    """Draws uint8 `digit` `[s, s, 3]` on every frame of `clip` `[frames, canvas, canvas, 3]` (in place,
    brighter pixel wins), moving `speed` pixels per frame in `direction` from a start drawn from `rng`
    such that the digit stays on the canvas throughout."""
    frames, canvas = clip.shape[:2]
    size = digit.shape[0]
    dy, dx = DIRECTIONS[direction]
    room = canvas - size  # top-left positions 0..room keep the digit on the canvas
    travel = speed * (frames - 1)

    def start(step):  # along the motion: anywhere the whole path fits; across it: anywhere
        if step == 0:
            return int(rng.integers(0, room + 1))
        low = 0 if step > 0 else travel
        return int(rng.integers(low, low + room - travel + 1))

    y0, x0 = start(dy), start(dx)
    for t in range(frames):
        y, x = y0 + dy * speed * t, x0 + dx * speed * t
        np.maximum(clip[t, y:y + size, x:x + size], digit, out=clip[t, y:y + size, x:x + size])


def make_clip(image: np.ndarray, direction: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[8, 8, 3]` digit -> uint8 `[NUM_FRAMES, CANVAS, CANVAS, 3]`, the digit moving in `direction`."""
    clip = np.zeros((NUM_FRAMES, CANVAS, CANVAS, 3), np.uint8)
    paint_moving(clip, resize(image, DIGIT_SIZE, DIGIT_SIZE), direction, 1, rng)
    return clip


def make_multilabel_clip(images: np.ndarray, labels: np.ndarray, rng: np.random.Generator):
    """One multi-label clip from a split's digits (uint8 `[n, 8, 8, 3]`, int `[n]`): (uint8 `[NUM_FRAMES,
    64, 64, 3]`, the digits' classes, their directions), one to MAX_DIGITS digits of distinct classes."""
    count = int(rng.integers(1, MAX_DIGITS + 1))
    classes = sorted(int(c) for c in rng.choice(10, size=count, replace=False))
    clip = np.zeros((NUM_FRAMES, MULTILABEL_CANVAS, MULTILABEL_CANVAS, 3), np.uint8)
    directions = []
    for digit_class in classes:
        image = images[int(rng.choice(np.flatnonzero(labels == digit_class)))]
        directions.append(list(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))])
        digit = resize(image, MULTILABEL_DIGIT_SIZE, MULTILABEL_DIGIT_SIZE)
        paint_moving(clip, digit, directions[-1], MULTILABEL_SPEED, rng)
    return clip, classes, directions


def _write_once(root: str, write: Callable[[str], None]) -> None:
    """Runs `write(folder)` into a private folder renamed to `root` when done, unless `root` is complete."""
    if os.path.exists(os.path.join(root, "COMPLETE")):
        return
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        write(tmp)
        open(os.path.join(tmp, "COMPLETE"), "w", encoding="utf-8").close()
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first
            if not os.path.exists(os.path.join(root, "COMPLETE")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def generate(root: str) -> None:
    """Writes every clip under `root/<split>/<digit>_<direction>/<image index>.mp4` unless already done."""
    def write(folder):
        for split, (images, labels) in digits.load_split_arrays().items():
            for index, (image, label) in enumerate(zip(images, labels)):
                for d, direction in enumerate(DIRECTIONS):
                    rng = np.random.default_rng([_SPLIT_IDS[split], index, d])
                    class_dir = os.path.join(folder, split, f"{label}_{direction}")
                    os.makedirs(class_dir, exist_ok=True)
                    video.write_video(os.path.join(class_dir, f"{index:04d}.mp4"), make_clip(image, direction, rng))

    _write_once(root, write)


def generate_multilabel(root: str) -> None:
    """Writes `root/clips/<split>/<i>.mp4` and, per labeling, `root/<labeling>/{classes.txt, <split>.csv}`
    unless already done."""
    def write(folder):
        rows = {labeling: {} for labeling in LABELINGS}
        for split, (images, labels) in digits.load_split_arrays().items():
            os.makedirs(os.path.join(folder, "clips", split))
            for labeling in LABELINGS:
                rows[labeling][split] = []
            for index in range(MULTILABEL_CLIPS[split]):
                clip, classes, directions = make_multilabel_clip(images, labels,
                                                                 np.random.default_rng([_SPLIT_IDS[split], index]))
                name = os.path.join("clips", split, f"{index:04d}.mp4")
                video.write_video(os.path.join(folder, name), clip)
                digit_names = [str(c) for c in classes]
                direction_names = sorted(set(directions), key=list(DIRECTIONS).index)
                rows["digits"][split].append((os.path.join("..", name), ";".join(digit_names)))
                rows["digits_and_directions"][split].append((os.path.join("..", name),
                                                             ";".join(digit_names + direction_names)))
        for labeling, classes in LABELINGS.items():
            os.makedirs(os.path.join(folder, labeling))
            with open(os.path.join(folder, labeling, video_multilabel.CLASSES_FILE), "w", encoding="utf-8") as f:
                f.writelines(name + "\n" for name in classes)
            for split, split_rows in rows[labeling].items():
                with open(os.path.join(folder, labeling, f"{split}.csv"), "w", encoding="utf-8", newline="") as f:
                    writer = csv.writer(f)
                    writer.writerow(("path", "labels"))
                    writer.writerows(split_rows)

    _write_once(root, write)


@registry.register("moving_digits")
def build(config: ml_collections.ConfigDict) -> video.VideoFileSource:
    root = os.path.join(config.data_dir, NAME) if config.data_dir else default_root()
    generate(root)
    return video.build_file_source(config, "moving_digits", root)


@registry.register("moving_digits_multilabel")
def build_multilabel(config: ml_collections.ConfigDict) -> video_multilabel.MultiLabelVideoSource:
    """Field `config.dataset.moving_digits_directions` (default False) adds the directions as classes."""
    root = os.path.join(config.data_dir, MULTILABEL_NAME) if config.data_dir else default_root(MULTILABEL_NAME)
    generate_multilabel(root)
    labeling = "digits_and_directions" if config.moving_digits_directions else "digits"
    return video_multilabel.build_multilabel_source(config, "moving_digits_multilabel",
                                                    os.path.join(root, labeling))
