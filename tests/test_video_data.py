"""Video input: PyAV decoding of written files, class folders and CSV / JSON lists, corrupt files
skipped and counted, temporal sampling and evaluation views, the moving-digits clips, and the grain
pipelines on videos."""

import json
import logging

import numpy as np
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import digits, video, video_digits
from tokenlearner_jax.data.preprocess import Preprocessor


def _config(**overrides):
    config = data.default_dataset_config()
    config.update(dict(image_size=16, num_frames=4, augment="none", normalize="unit"))
    config.update(overrides)
    return config


def _indexed_clip(num_frames, size=32):
    """uint8 [num_frames, size, size, 3] whose frame t is uniformly grey level 10 * t + 5."""
    return np.broadcast_to((10 * np.arange(num_frames) + 5).astype(np.uint8)[:, None, None, None],
                           (num_frames, size, size, 3)).copy()


def _frame_ids(clip_float_unit):
    """Frame index of every frame of a 'unit'-normalised clip made by `_indexed_clip`."""
    return np.rint((clip_float_unit.mean(axis=(-3, -2, -1)) * 255 - 5) / 10).astype(int)


def test_decoding_returns_the_frames_written(tmp_path):
    images, _ = digits.load_split_arrays()["train"]
    clip = video_digits.make_clip(images[0], "left", np.random.default_rng(0))
    video.write_video(str(tmp_path / "digit.mp4"), clip)
    decoded = np.stack(list(video.VideoFile(str(tmp_path / "digit.mp4")).decode()))
    assert decoded.shape == clip.shape == (16, 32, 32, 3)
    error = np.abs(decoded.astype(int) - clip)
    assert error.max() <= 2 and error.mean() < 0.2  # grey content, H.264 crf 0: rounding of the YUV conversion

    # Colour goes through 4:2:0 chroma subsampling: smooth colour survives within a few grey levels.
    t, y, x = np.meshgrid(np.arange(8), np.arange(32), np.arange(32), indexing="ij")
    colour = np.stack([x * 8, y * 8, t * 30 + 10], axis=-1).astype(np.uint8)
    video.write_video(str(tmp_path / "colour.mp4"), colour)
    decoded = np.stack(list(video.VideoFile(str(tmp_path / "colour.mp4")).decode()))
    error = np.abs(decoded.astype(int) - colour)
    assert error.mean() < 4 and error.max() <= 12


@pytest.fixture
def folder(tmp_path):
    """train: cat (2 clips), dog (2 clips + a garbage file + a truncated mp4); test: one clip each."""
    for split, counts in (("train", {"cat": 2, "dog": 2}), ("test", {"cat": 1, "dog": 1})):
        for c, (name, count) in enumerate(counts.items()):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(count):
                clip = _indexed_clip(8, 16) + np.uint8(100 * c + 20 * i)
                video.write_video(str(tmp_path / split / name / f"{i}.mp4"), clip)
    (tmp_path / "train" / "dog" / "0b_garbage.mp4").write_bytes(b"not a video at all" * 10)
    whole = (tmp_path / "train" / "dog" / "1.mp4").read_bytes()
    (tmp_path / "train" / "dog" / "1a_truncated.mp4").write_bytes(whole[: len(whole) // 3])
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    return tmp_path


def test_corrupt_videos_are_skipped_counted_and_logged(folder, caplog):
    config = _config(name="video_folder", data_dir=str(folder))
    source = data.registry.get_source(config)
    assert source.classes == ("cat", "dog")
    split = source.split("train")
    # Sorted files: cat/0, cat/1, dog/0, dog/0b_garbage, dog/1, dog/1a_truncated.
    assert len(split) == 6
    with caplog.at_level(logging.WARNING):
        read = [split.read(i, lambda frames: np.asarray(frames[0])) for i in range(len(split))]
        read += [split.read(3, lambda frames: np.asarray(frames[0]))]  # met again: counted once
    assert split.num_corrupt == 2
    assert "0b_garbage.mp4" in caplog.text and "1a_truncated.mp4" in caplog.text
    assert [label for _, label in read] == [0, 0, 1, 1, 1, 0, 1]
    # A bad file is replaced by the next readable one: dog/0b_garbage by dog/1, dog/1a_truncated by cat/0.
    np.testing.assert_array_equal(read[3][0], read[4][0])
    np.testing.assert_array_equal(read[5][0], read[0][0])

    batches = data.train_iterator(config, global_batch_size=6, seed=0)
    assert next(batches)["image"].shape == (6, 4, 16, 16, 3)

    config.skip_corrupt_images = False
    with pytest.raises(ValueError, match=r"unreadable video .*0b_garbage.mp4"):
        data.registry.get_source(config).split("train").read(3, lambda frames: frames[0])


def test_csv_and_json_lists_with_clip_times(tmp_path):
    video.write_video(str(tmp_path / "long.mp4"), _indexed_clip(16), fps=8)  # 2 seconds
    video.write_video(str(tmp_path / "short.mp4"), _indexed_clip(4), fps=8)
    (tmp_path / "train.csv").write_text("path,label,start,end\nlong.mp4,swim,1.0,1.5\nshort.mp4,abseil,,\n")
    (tmp_path / "test.json").write_text(json.dumps([{"path": str(tmp_path / "long.mp4"), "label": "swim",
                                                     "start": 0.5, "end": 1.0}]))
    config = _config(name="kinetics400", data_dir=str(tmp_path), num_frames=4, eval_split="test")
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval, info.image_shape) == (2, 2, 1, (4, 16, 16, 3))
    split = data.registry.get_source(config).split("train")
    (frames, label), (_, label_short) = split.read(0, list), split.read(1, list)
    assert (label, label_short) == (1, 0)  # classes sorted: abseil, swim
    ids = [int(round((f.mean() - 5) / 10)) for f in frames]
    assert ids == [8, 9, 10, 11]  # seconds 1.0 to 1.5 at 8 fps
    (batch,) = list(data.eval_batches(config, global_batch_size=1))
    assert _frame_ids(batch["image"][0]).tolist() == [4, 5, 6, 7]


def test_missing_kinetics_names_the_expected_layout(tmp_path):
    config = _config(name="kinetics400", data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.get_info(config)
    message = str(error.value)
    assert "kinetics400" in message and str(tmp_path / "nowhere") in message
    assert "<data_dir>/<split>/<class_name>/<video>.mp4" in message and "path,label[,start,end]" in message
    with pytest.raises(data.DatasetNotFoundError, match="needs config.dataset.data_dir"):
        data.get_info(_config(name="kinetics600"))
    with pytest.raises(ValueError, match="config.dataset.num_frames=0"):
        data.get_info(_config(name="video_folder", data_dir=str(tmp_path), num_frames=0))
    with pytest.raises(ValueError, match="config.dataset.num_frames=4: dataset 'digits' holds images"):
        data.get_info(_config(name="digits"))


def _video_prep(**overrides):
    fields = dict(num_frames=4, frame_stride=2, temporal_views=1, spatial_views=1)
    fields.update(overrides)
    frame = Preprocessor(image_size=16, augment="inception_crop", shift_pixels=0, eval_crop_fraction=1.0,
                         normalize_mode="unit", natural_images=True)
    return video.VideoPreprocessor(frame, **fields)


def test_temporal_sampling_and_evaluation_views():
    prep = _video_prep()
    clip = _indexed_clip(20)
    starts = set()
    for seed in range(200):
        ids = _frame_ids(prep.train(clip, np.random.default_rng(seed)))
        assert (np.diff(ids) == 2).all()  # num_frames frames, frame_stride apart
        starts.add(ids[0])
    assert starts == set(range(0, 20 - 6))  # every start that keeps the clip inside the video
    assert _frame_ids(prep.eval(clip)).tolist() == [6, 8, 10, 12]  # centred: start (20 - 7) // 2
    assert _frame_ids(prep.eval(_indexed_clip(5))).tolist() == [0, 2, 4, 1]  # a short video loops

    views = _video_prep(temporal_views=3, spatial_views=3)
    assert views.eval_shape == (9, 4, 16, 16, 3)
    wide = np.zeros((20, 16, 48, 3), np.uint8)
    wide[:, :, :16] = 255  # white left third
    out = views.eval(wide)
    assert out.shape == (9, 4, 16, 16, 3)
    # Spatial views are the left, centre and right crops of the longer side.
    np.testing.assert_allclose(out[:3].mean(axis=(1, 2, 3, 4)), [1.0, 0.0, 0.0])
    out = views.eval(clip)
    assert [_frame_ids(out[3 * t])[0] for t in range(3)] == [0, 6, 13]  # clips evenly spaced in time


def test_one_crop_and_flip_for_the_whole_clip():
    prep = _video_prep()
    frame = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    static = np.stack([frame] * 10)
    for seed in range(5):
        out = prep.train(static, np.random.default_rng(seed))
        for t in range(1, 4):
            np.testing.assert_array_equal(out[t], out[0])


def test_moving_digits_move_in_their_direction(tmp_path, monkeypatch):
    images, labels = digits.load_split_arrays()["train"]
    for d, (direction, (dy, dx)) in enumerate(video_digits.DIRECTIONS.items()):
        clip = video_digits.make_clip(images[3], direction, np.random.default_rng([0, 3, d]))
        mass = clip[..., 0].astype(float)
        ys, xs = np.arange(32)[:, None], np.arange(32)[None, :]
        centre = np.stack([(mass * ys).sum((1, 2)), (mass * xs).sum((1, 2))], -1) / mass.sum((1, 2))[:, None]
        np.testing.assert_allclose(np.diff(centre, axis=0), np.tile([dy, dx], (15, 1)), atol=1e-9)
        np.testing.assert_array_equal(clip, video_digits.make_clip(images[3], direction,
                                                                   np.random.default_rng([0, 3, d])))

    # Written on first use into data_dir and read back as a class folder (a small subset here).
    subset = {split: (images[:10], labels[:10]) for split in ("train", "test")}
    monkeypatch.setattr(digits, "load_split_arrays", lambda: subset)
    config = _config(name="moving_digits", data_dir=str(tmp_path), image_size=32, num_frames=8, frame_stride=2,
                     normalize="minus_one_one")
    info = data.get_info(config)
    assert (info.num_train, info.num_eval) == (40, 40)
    assert (tmp_path / video_digits.NAME / "COMPLETE").exists()
    source = data.registry.get_source(config)
    assert source.classes[:4] == ("0_down", "0_left", "0_right", "0_up")
    assert len(source.classes) == len({f"{label}_{d}" for label in labels[:10] for d in video_digits.DIRECTIONS})
    batch = next(data.train_iterator(config, global_batch_size=8, seed=0))
    assert batch["image"].shape == (8, 8, 32, 32, 3) and batch["image"].min() >= -1.0


def test_eval_batches_pad_videos_and_carry_views(folder):
    config = _config(name="video_folder", data_dir=str(folder), eval_temporal_views=2, eval_spatial_views=1)
    batches = list(data.eval_batches(config, global_batch_size=3))
    assert len(batches) == 1
    batch = batches[0]
    assert batch["image"].shape == (3, 2, 4, 16, 16, 3)
    assert batch["mask"].tolist() == [1.0, 1.0, 0.0] and batch["label"].tolist() == [0, 1, 0]


def test_synthetic_videos():
    config = _config(name="synthetic", num_classes=5, synthetic_train_size=4, synthetic_eval_size=2)
    assert data.get_info(config).image_shape == (4, 16, 16, 3)
    batch = next(data.train_iterator(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 4, 16, 16, 3)
