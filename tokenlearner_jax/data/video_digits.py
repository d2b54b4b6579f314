"""Moving digits: scikit-learn's digits moving across a black canvas, as real video files (no download).

Each image of the fixed digits split (data/digits.py: 1,437 train / 360 test) gives one clip per
direction of motion (right, left, down, up): 16 frames of 32x32, the digit upscaled to 12x12 and moving
one pixel per frame, starting from a position drawn from a generator seeded by (split, image, direction)
such that the digit stays on the canvas. The class is '<digit>_<direction>' (40 classes, 5,748 train
and 1,440 test clips); one frame shows the digit but not where it is going, so the direction needs
time.

The clips are written once, on first use, as H.264 mp4 files (crf 0) in the class-folder layout of
data/video.py, under `config.dataset.data_dir` or else `$TOKENLEARNER_JAX_CACHE` (default
~/.cache/tokenlearner_jax), in `moving_digits_v1/`, and then read back like any user video folder,
through the same decoder. Generation takes about a minute; a finished cache is marked by a
`COMPLETE` file, and concurrent writers (several processes) each write a private copy and rename it
into place, so readers never see a partial cache.
"""

import os
import shutil
import tempfile

import ml_collections
import numpy as np

from tokenlearner_jax.data import digits, registry, video
from tokenlearner_jax.data.preprocess import resize

NAME = "moving_digits_v1"
NUM_FRAMES = 16
CANVAS = 32
DIGIT_SIZE = 12
DIRECTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}  # (dy, dx) per frame
_SPLIT_IDS = {"train": 0, "test": 1}


def default_root() -> str:
    base = os.environ.get("TOKENLEARNER_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                       "tokenlearner_jax")
    return os.path.join(base, NAME)


def make_clip(image: np.ndarray, direction: str, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[8, 8, 3]` digit -> uint8 `[NUM_FRAMES, CANVAS, CANVAS, 3]`, the digit moving in `direction`."""
    digit = resize(image, DIGIT_SIZE, DIGIT_SIZE)
    dy, dx = DIRECTIONS[direction]
    room = CANVAS - DIGIT_SIZE  # top-left positions 0..room keep the digit on the canvas
    travel = NUM_FRAMES - 1

    def start(step):  # along the motion: anywhere the whole path fits; across it: anywhere
        if step == 0:
            return int(rng.integers(0, room + 1))
        low = 0 if step > 0 else travel
        return int(rng.integers(low, low + room - travel + 1))

    y0, x0 = start(dy), start(dx)
    clip = np.zeros((NUM_FRAMES, CANVAS, CANVAS, 3), np.uint8)
    for t in range(NUM_FRAMES):
        y, x = y0 + dy * t, x0 + dx * t
        clip[t, y:y + DIGIT_SIZE, x:x + DIGIT_SIZE] = digit
    return clip


def generate(root: str) -> None:
    """Writes every clip under `root/<split>/<digit>_<direction>/<image index>.mp4` unless already done."""
    if os.path.exists(os.path.join(root, "COMPLETE")):
        return
    parent = os.path.dirname(os.path.abspath(root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(root)}.", dir=parent)
    try:
        for split, (images, labels) in digits.load_split_arrays().items():
            for index, (image, label) in enumerate(zip(images, labels)):
                for d, direction in enumerate(DIRECTIONS):
                    rng = np.random.default_rng([_SPLIT_IDS[split], index, d])
                    class_dir = os.path.join(tmp, split, f"{label}_{direction}")
                    os.makedirs(class_dir, exist_ok=True)
                    video.write_video(os.path.join(class_dir, f"{index:04d}.mp4"), make_clip(image, direction, rng))
        open(os.path.join(tmp, "COMPLETE"), "w", encoding="utf-8").close()
        try:
            os.rename(tmp, root)
        except OSError:  # another process finished first
            if not os.path.exists(os.path.join(root, "COMPLETE")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@registry.register("moving_digits")
def build(config: ml_collections.ConfigDict) -> video.VideoFileSource:
    root = os.path.join(config.data_dir, NAME) if config.data_dir else default_root()
    generate(root)
    return video.build_file_source(config, "moving_digits", root)
