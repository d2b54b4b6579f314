"""Charades reader on the committed fixture (tests/fixtures/charades, written by its make_fixture.py):
the annotations, clip labels from the actions overlapping the sampled frames (checked against overlaps
worked out by hand), full video labels in evaluation, skipped unreadable videos and the missing-dataset
error."""

import os
import shutil

import numpy as np
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import charades  # noqa: F401  (registers 'charades')

FIXTURE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "charades")
FPS = {0: 8, 1: 6}  # train videos AB123, CD456
# The fixture's train actions as (class, start, end), per video.
ACTIONS = {0: [(5, 0.0, 0.9), (10, 1.0, 1.5), (20, 2.6, 3.0), (5, 2.2, 2.4)],
           1: [(156, 0.5, 2.5), (0, 2.9, 5.0)]}


def _config(**overrides):
    config = data.default_dataset_config()
    config.update(dict(name="charades", data_dir=FIXTURE, image_size=16, num_frames=4, frame_stride=2,
                       augment="none", normalize="unit", num_classes=157))
    config.update(overrides)
    return config


def _pick(indices):
    """A preprocessing stand-in that reads the frames `indices` (and returns nothing else)."""
    return lambda frames: [frames[i] for i in indices]


def test_annotations_classes_and_video_labels():
    info = data.get_info(_config())
    assert (info.num_classes, info.num_train, info.num_eval, info.multi_label) == (157, 2, 1, True)
    source = data.registry.get_source(_config())
    assert source.classes[0] == "c000" and source.classes[156] == "c156"
    train, test = source.split("train"), source.split("test")
    assert [example["label"] for example in train] == [[5, 10, 20], [0, 156]]
    assert test[0]["label"] == [42, 43]
    assert train[1]["image"].path == os.path.join(FIXTURE, "Charades_v1_480", "CD456.mp4")


@pytest.mark.parametrize("video, frames, expected", [
    # AB123 at 8 fps: frame k shows seconds [k / 8, (k + 1) / 8).
    (0, (0, 2, 4, 6), [5]),         # [0, 0.875): c005 [0, 0.9] only
    (0, (6, 8), [5, 10]),           # [0.75, 1.125): the end of c005 and the start of c010 [1.0, 1.5]
    (0, (8, 9, 10, 11), [10]),      # [1.0, 1.5): c005 ended at 0.9
    (0, (12, 14, 16), []),          # [1.5, 2.125): c010 ends exactly at 1.5, c005 [2.2, 2.4] not begun
    (0, (17,), [5]),                # [2.125, 2.25): the second c005
    (0, (20, 22), [20]),            # [2.5, 2.875): c020 [2.6, 3.0]; the second c005 ended at 2.4
    (0, (22, 23, 0, 1), [5, 10, 20]),  # a clip that loops spans the whole video
    # CD456 at 6 fps: frame k shows seconds [k / 6, (k + 1) / 6).
    (1, (0, 1), []),                # [0, 1/3): c156 begins at 0.5
    (1, (2, 3), [156]),             # [1/3, 2/3)
    (1, (14, 15), [156]),           # [7/3, 8/3): c156 ends at 2.5
    (1, (15, 17), [0]),             # [2.5, 3.0): c156 ended exactly at 2.5, c000 [2.9, 5.0] began
])
def test_training_clip_labels_are_the_overlapping_actions(video, frames, expected):
    split = data.registry.get_source(_config()).split("train")
    _, label = split.read(video, _pick(frames))
    assert label == expected


def test_evaluation_uses_the_whole_video_label_set():
    split = data.registry.get_source(_config()).split("test")
    for frames in ((0,), (15,), (4, 5, 6)):
        assert split.read(0, _pick(frames))[1] == [42, 43]  # c042 [0, 1], c043 [1.5, 2]


def _video_and_frames(clip):
    """(video number, frame indices) of a 'unit'-normalised fixture clip `[frames, h, w, 3]`."""
    colour = clip.mean(axis=(1, 2)) * 255
    videos = set(np.rint((colour[:, 2] - 20) / 40).astype(int).tolist())
    assert len(videos) == 1
    return videos.pop(), np.rint((colour[:, 0] - 5) / 10).astype(int)


def test_training_pipeline_labels_match_the_sampled_frames():
    """Through the grain pipeline and the real temporal sampling: every clip's multi-hot label is the set
    of actions overlapping [first frame, last frame + 1 / fps), computed here from the clip's pixels."""
    config = _config(num_frames=3, frame_stride=3)
    batches = data.train_iterator(config, global_batch_size=2, seed=0)
    seen = set()
    for _ in range(12):
        batch = next(batches)
        for clip, label in zip(batch["image"], batch["label"]):
            video, frames = _video_and_frames(clip)
            assert (np.diff(frames) == 3).all()
            start, end = frames[0] / FPS[video], (frames[-1] + 1) / FPS[video]
            expected = sorted({c for c, s, e in ACTIONS[video] if s < end and e > start})
            assert np.flatnonzero(label).tolist() == expected
            seen.add(tuple(expected))
    assert len(seen) >= 4  # different clips, different label sets


def test_evaluation_batches_carry_views_and_the_video_labels():
    config = _config(eval_temporal_views=3)
    (batch,) = list(data.eval_batches(config, global_batch_size=2))
    assert batch["image"].shape == (2, 3, 4, 16, 16, 3)
    assert batch["mask"].tolist() == [1.0, 0.0]
    assert np.flatnonzero(batch["label"][0]).tolist() == [42, 43]
    starts = [_video_and_frames(view)[1][0] for view in batch["image"][0]]
    assert starts == [0, 4, 9]  # rint(linspace(0, 16 - 7, 3))


def test_unreadable_videos_are_skipped_and_counted(tmp_path):
    root = tmp_path / "charades"
    shutil.copytree(FIXTURE, root)
    os.remove(root / "Charades_v1_480" / "AB123.mp4")  # listed but missing
    (root / "Charades_v1_480" / "CD456.mp4").write_bytes(b"\x00" * 100)  # corrupt
    shutil.copy(root / "Charades_v1_480" / "EF789.mp4", root / "Charades_v1_480" / "AB123.mp4")
    split = data.registry.get_source(_config(data_dir=str(root))).split("train")
    assert split.read(0, _pick((0,)))[1] == [5]  # AB123 (now a copy of EF789) reads fine
    os.remove(root / "Charades_v1_480" / "AB123.mp4")
    with pytest.raises(ValueError, match="no readable video among 2 files"):
        split.read(1, _pick((0,)))
    assert split.num_corrupt == 2

    config = _config(data_dir=str(root), skip_corrupt_images=False)
    with pytest.raises(ValueError, match=r"unreadable video .*CD456.mp4"):
        data.registry.get_source(config).split("train").read(1, _pick((0,)))


def test_a_missing_dataset_names_it_and_the_layout(tmp_path):
    for config in (_config(data_dir=str(tmp_path / "nowhere")), _config(data_dir=None)):
        with pytest.raises(data.DatasetNotFoundError) as error:
            data.get_info(config)
        message = str(error.value)
        assert "'charades'" in message and "\n" not in message
        assert "Charades_v1_train.csv" in message and "Charades_v1_classes.txt" in message
        assert "Charades_v1_480/<id>.mp4" in message
    partial = tmp_path / "partial"
    shutil.copytree(FIXTURE, partial)
    shutil.rmtree(partial / "Charades_v1_480")
    with pytest.raises(data.DatasetNotFoundError, match=r"partial/Charades_v1_480/ not found"):
        data.get_info(_config(data_dir=str(partial)))
    with pytest.raises(ValueError, match=r"config.dataset.eval_split='val'"):
        data.get_info(_config(eval_split="val"))


def test_bad_annotations_name_the_file_and_line(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "c")
    path = tmp_path / "c" / "Charades_v1_test.csv"
    path.write_text(path.read_text().replace("c043 1.50 2.00", "c999 1.50 2.00"))
    with pytest.raises(ValueError, match=r"Charades_v1_test.csv line 2: action 'c999 1.50 2.00'"):
        data.get_info(_config(data_dir=str(tmp_path / "c")))
