"""Defaults and validation for the `config.dataset` section."""

import ml_collections

AUGMENTATIONS = ("none", "shift", "inception_crop")
NORMALIZATIONS = ("imagenet", "minus_one_one", "unit")


def default_dataset_config() -> ml_collections.ConfigDict:
    """Returns a `config.dataset` section with every supported field.

    Fields:
      name: 'digits' | 'synthetic' | 'image_folder' | any TFDS dataset name.
      data_dir: TFDS data dir (None: TFDS default / $TFDS_DATA_DIR) or the
        image-folder root.
      image_size: Output images are float32 [image_size, image_size, 3].
      train_split, eval_split: Split names (TFDS slicing such as 'train[:99%]'
        works for TFDS datasets).
      num_classes: Class count for 'synthetic' (-1: 1000); for other datasets -1
        takes it from the data, any other value must match the data.
      augment: 'none' | 'shift' (random translation by up to `shift_pixels`,
        zero fill) | 'inception_crop' (random-resized crop + horizontal flip).
      shift_pixels: Maximum translation of 'shift', in output pixels.
      eval_crop_fraction: Natural-image eval: resize the shorter side to
        image_size / eval_crop_fraction, then central-crop image_size.
      normalize: 'imagenet' (per-channel mean/std) | 'minus_one_one' (x/127.5-1)
        | 'unit' (x/255).
      randaugment_num_ops: RandAugment ops per training image after `augment`
        (data/augment.py, meant for natural images); 0 turns it off.
      randaugment_magnitude, randaugment_magnitude_std: Op strength in [0, 10]
        (up to 20 extrapolates past the nominal maximum 10, as TF's RandAugment)
        and its per-op Gaussian noise.
      random_erasing_prob: Probability of erasing one random rectangle (2% to
        1/3 of the area, aspect 0.3 to 3.3) of a normalised training image with
        N(0, 1) noise (data/augment.py; the DeiT / NesT recipe uses 0.25).
      skip_corrupt_images: image_folder and video datasets: skip unreadable
        files (counted, paths logged) or stop the run naming the file.
      num_frames: Frames per clip of a video dataset (data/video.py); 0 for
        images. Examples are then float32 [num_frames, S, S, 3].
      frame_stride: Step between the sampled frames, in decoded frames.
      eval_temporal_views, eval_spatial_views: Video evaluation views: clips
        evenly spaced in time x crops along the longer side; with more than one
        the trainer averages the logits over the views.
      num_workers: Preprocessing threads (0: in the calling thread).
      moving_digits_directions: 'moving_digits_multilabel' also labels each
        digit's direction of motion (4 more classes).
      synthetic_train_size, synthetic_eval_size: Split sizes of 'synthetic'.
    """
    return ml_collections.ConfigDict(
        dict(
            name="digits",
            data_dir=ml_collections.config_dict.placeholder(str),
            image_size=32,
            train_split="train",
            eval_split="test",
            num_classes=-1,
            augment="shift",
            shift_pixels=4,
            eval_crop_fraction=0.875,
            normalize="minus_one_one",
            randaugment_num_ops=0,
            randaugment_magnitude=9.0,
            randaugment_magnitude_std=0.5,
            random_erasing_prob=0.0,
            num_workers=0,
            skip_corrupt_images=True,
            num_frames=0,
            frame_stride=1,
            eval_temporal_views=1,
            eval_spatial_views=1,
            moving_digits_directions=False,
            synthetic_train_size=1024,
            synthetic_eval_size=256,
        )
    )


def example_shape(config: ml_collections.ConfigDict) -> tuple:
    """The shape of one preprocessed example: (image_size, image_size, 3), or with num_frames > 0
    (num_frames, image_size, image_size, 3)."""
    size = config.image_size
    return ((config.num_frames,) if config.num_frames > 0 else ()) + (size, size, 3)


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ValueError naming the offending field of a bad dataset config."""
    if config.augment not in AUGMENTATIONS:
        raise ValueError(f"config.dataset.augment={config.augment!r}: expected one of" f" {AUGMENTATIONS}")
    if config.normalize not in NORMALIZATIONS:
        raise ValueError(
            f"config.dataset.normalize={config.normalize!r}: expected one of" f" {NORMALIZATIONS}"
        )
    if config.image_size <= 0:
        raise ValueError(f"config.dataset.image_size={config.image_size}: must be positive")
    if config.shift_pixels < 0:
        raise ValueError(f"config.dataset.shift_pixels={config.shift_pixels}: must be >= 0")
    if not 0.0 < config.eval_crop_fraction <= 1.0:
        raise ValueError(
            f"config.dataset.eval_crop_fraction={config.eval_crop_fraction}: must" " be in (0, 1]"
        )
    if config.randaugment_num_ops < 0:
        raise ValueError(f"config.dataset.randaugment_num_ops={config.randaugment_num_ops}: must be >= 0")
    if not 0.0 <= config.randaugment_magnitude <= 20.0:
        raise ValueError(
            f"config.dataset.randaugment_magnitude={config.randaugment_magnitude}: must be in [0, 20]"
        )
    if config.randaugment_magnitude_std < 0:
        raise ValueError(
            f"config.dataset.randaugment_magnitude_std={config.randaugment_magnitude_std}: must be >= 0"
        )
    if not 0.0 <= config.random_erasing_prob <= 1.0:
        raise ValueError(f"config.dataset.random_erasing_prob={config.random_erasing_prob}: must be in [0, 1]")
    if config.num_frames < 0:
        raise ValueError(f"config.dataset.num_frames={config.num_frames}: must be >= 0 (0: images)")
    for field in ("frame_stride", "eval_temporal_views", "eval_spatial_views"):
        if config[field] < 1:
            raise ValueError(f"config.dataset.{field}={config[field]}: must be >= 1")
    if config.num_workers < 0:
        raise ValueError(f"config.dataset.num_workers={config.num_workers}: must be >= 0")
