"""Multi-label videos: the generic list reader ('video_folder_multilabel': CSV / JSON lists of class
sets, classes.txt or the train split's names, errors naming the file) and the bundled multi-label
moving digits ('moving_digits_multilabel': one to three digits, each moving in its own direction; the
label is the set of digits, optionally with their directions)."""

import json

import numpy as np
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import digits, video, video_digits
from tokenlearner_jax.data.preprocess import resize


def _config(**overrides):
    config = data.default_dataset_config()
    config.update(dict(image_size=16, num_frames=4, augment="none", normalize="unit"))
    config.update(overrides)
    return config


def _grey_clip(level, frames=6, size=16):
    return np.full((frames, size, size, 3), level, np.uint8)


@pytest.fixture
def listed(tmp_path):
    """Four train clips and two test clips, listed with class sets (one with none)."""
    (tmp_path / "clips").mkdir()
    for i in range(6):
        video.write_video(str(tmp_path / "clips" / f"{i}.mp4"), _grey_clip(40 * i + 20))
    (tmp_path / "train.csv").write_text("path,labels\nclips/0.mp4,cat;dog\nclips/1.mp4,dog\nclips/2.mp4,\n"
                                        "clips/3.mp4,bird; cat\n")
    (tmp_path / "test.json").write_text(json.dumps([{"path": "clips/4.mp4", "labels": ["bird"]},
                                                    {"path": str(tmp_path / "clips" / "5.mp4"),
                                                     "labels": ["cat", "dog", "bird"]}]))
    return tmp_path


def test_lists_of_class_sets(listed):
    config = _config(name="video_folder_multilabel", data_dir=str(listed))
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval, info.multi_label) == (3, 4, 2, True)
    source = data.registry.get_source(config)
    assert source.classes == ("bird", "cat", "dog")  # the train split's names, sorted
    assert [example["label"] for example in source.split("train")] == [[1, 2], [2], [], [0, 1]]
    assert [example["label"] for example in source.split("test")] == [[0], [0, 1, 2]]

    batch = next(data.train_iterator(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 4, 16, 16, 3) and batch["label"].dtype == np.float32
    for clip, target in zip(batch["image"], batch["label"]):  # clip i is grey 40 i + 20
        index = int(np.rint((clip.mean() * 255 - 20) / 40))
        expected = np.zeros(3, np.float32)
        expected[[[1, 2], [2], [], [0, 1]][index]] = 1.0
        np.testing.assert_array_equal(target, expected)

    (batch,) = list(data.eval_batches(_config(name="video_folder_multilabel", data_dir=str(listed),
                                              eval_temporal_views=2), global_batch_size=3))
    assert batch["image"].shape == (3, 2, 4, 16, 16, 3)
    np.testing.assert_array_equal(batch["label"], [[1, 0, 0], [1, 1, 1], [0, 0, 0]])
    assert batch["mask"].tolist() == [1.0, 1.0, 0.0]


def test_classes_file_fixes_the_order_and_admits_classes_missing_from_train(listed):
    (listed / "test.json").write_text(json.dumps([{"path": "clips/4.mp4", "labels": ["fish"]}]))
    config = _config(name="video_folder_multilabel", data_dir=str(listed))
    with pytest.raises(ValueError, match=r"classes \['fish'\] of .*4.mp4' \(split 'test'\).*classes.txt"):
        data.get_info(config)
    (listed / "classes.txt").write_text("dog\ncat\nbird\n\nfish\n")
    source = data.registry.get_source(config)
    assert source.classes == ("dog", "cat", "bird", "fish") and source.num_classes == 4
    assert [example["label"] for example in source.split("train")] == [[0, 1], [0], [], [1, 2]]
    assert source.split("test")[0]["label"] == [3]
    (listed / "classes.txt").write_text("dog\ncat\ndog\n")
    with pytest.raises(ValueError, match=r"classes.txt: classes \['dog'\] are listed more than once"):
        data.get_info(config)


def test_missing_or_malformed_lists_name_the_layout(listed, tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as error:
        data.get_info(_config(name="video_folder_multilabel", data_dir=str(tmp_path / "nowhere")))
    assert "'video_folder_multilabel'" in str(error.value) and "path,labels[,start,end]" in str(error.value)
    with pytest.raises(data.DatasetNotFoundError, match="needs config.dataset.data_dir"):
        data.get_info(_config(name="video_folder_multilabel"))
    (listed / "train.csv").write_text("path,label\nclips/0.mp4,cat\n")
    with pytest.raises(ValueError, match=r"train.csv: entry 0 .* has no 'path' and 'labels'"):
        data.get_info(_config(name="video_folder_multilabel", data_dir=str(listed)))


def _centre(frame):
    mass = frame[..., 0].astype(float)
    ys, xs = np.indices(mass.shape)
    return np.array([(mass * ys).sum(), (mass * xs).sum()]) / mass.sum()


@pytest.mark.parametrize("direction", list(video_digits.DIRECTIONS))
def test_painted_digits_move_at_their_speed_and_stay_on_the_canvas(direction):
    images, _ = digits.load_split_arrays()["train"]
    digit = resize(images[5], 16, 16)
    dy, dx = video_digits.DIRECTIONS[direction]
    for seed in range(20):
        clip = np.zeros((16, 64, 64, 3), np.uint8)
        video_digits.paint_moving(clip, digit, direction, 2, np.random.default_rng(seed))
        masses = clip[..., 0].astype(int).sum(axis=(1, 2))
        assert (masses == digit[..., 0].astype(int).sum()).all()  # the whole digit in every frame
        centres = np.stack([_centre(frame) for frame in clip])
        np.testing.assert_allclose(np.diff(centres, axis=0), np.tile([2 * dy, 2 * dx], (15, 1)), atol=1e-9)


def test_multilabel_clips_are_deterministic_with_one_to_three_distinct_digits():
    images, labels = digits.load_split_arrays()["train"]
    counts, directions_seen = [], set()
    for index in range(60):
        clip, classes, directions = video_digits.make_multilabel_clip(images, labels, np.random.default_rng([0, index]))
        again, classes_again, directions_again = video_digits.make_multilabel_clip(
            images, labels, np.random.default_rng([0, index]))
        np.testing.assert_array_equal(clip, again)
        assert (classes, directions) == (classes_again, directions_again)
        assert clip.shape == (16, 64, 64, 3) and len(set(classes)) == len(classes) == len(directions)
        assert clip.max() > 200
        counts.append(len(classes))
        directions_seen.update(directions)
    assert set(counts) == {1, 2, 3} and directions_seen == set(video_digits.DIRECTIONS)


@pytest.mark.parametrize("with_directions", [False, True])
def test_moving_digits_multilabel_written_once_and_read_back(tmp_path, monkeypatch, with_directions):
    monkeypatch.setattr(video_digits, "MULTILABEL_CLIPS", {"train": 8, "test": 4})
    config = _config(name="moving_digits_multilabel", data_dir=str(tmp_path), image_size=64, num_frames=16,
                     normalize="unit")
    config.moving_digits_directions = with_directions
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == ((14 if with_directions else 10), 8, 4)
    root = tmp_path / video_digits.MULTILABEL_NAME
    assert (root / "COMPLETE").exists()
    source = data.registry.get_source(config)
    names = list(video_digits.LABELINGS["digits_and_directions" if with_directions else "digits"])
    assert list(source.classes) == names

    images, labels = digits.load_split_arrays()["test"]
    split = source.split("test")
    for index in range(4):
        clip, classes, directions = video_digits.make_multilabel_clip(images, labels, np.random.default_rng([1, index]))
        expected = [str(c) for c in classes] + (directions if with_directions else [])
        assert split[index]["label"] == sorted({names.index(name) for name in expected})
        decoded, label = split.read(index, lambda frames: np.stack(list(frames)))
        assert np.abs(decoded.astype(int) - clip).mean() < 0.5  # H.264 crf 0
        assert label == split[index]["label"]

    batch = next(data.train_iterator(config, global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 16, 64, 64, 3)
    assert batch["label"].shape == (4, len(names))
    assert set(batch["label"][:, :10].sum(axis=1).tolist()) <= {1.0, 2.0, 3.0}
