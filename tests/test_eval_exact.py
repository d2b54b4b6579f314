"""Evaluation counts only what it read: an unreadable eval image is left out and counted as skipped
(never replaced by its neighbour under the neighbour's label), and an empty class folder is an error."""

import collections

import numpy as np
import pytest
from PIL import Image

from tokenlearner_jax import data
from tokenlearner_jax.data import image_folder

# Eval split: class a has 3 images, b has 4, c has 2; two of b's and one of c's do not decode.
EVAL_FILES = {"a": ["0.png", "1.png", "2.png"], "b": ["0.png", "1_bad.png", "2.png", "3_bad.png"],
              "c": ["0.png", "1_bad.png"]}


def _png(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((6, 6, 3), value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    for c, name in enumerate("abc"):
        for i in range(2):
            _png(tmp_path / "train" / name / f"{i}.png", 10 * c + i)
        for file in EVAL_FILES[name]:
            path = tmp_path / "test" / name / file
            if "bad" in file:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(b"\x89PNG but not really")
            else:
                _png(path, 100 + 10 * c)  # every image of class c has the value 100 + 10 c
    return tmp_path


def _config(folder, **overrides):
    config = data.default_dataset_config()
    config.update(dict(name="image_folder", data_dir=str(folder), train_split="train", eval_split="test",
                       image_size=4, augment="none", normalize="unit", num_workers=0, eval_crop_fraction=1.0))
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


def _real(batches):
    """(labels, image values, skipped count) of the real examples of all batches."""
    labels, values, skipped = [], [], 0.0
    for batch in batches:
        keep = batch["mask"] == 1
        labels += batch["label"][keep].tolist()
        values += [int(round(255 * float(v))) for v in batch["image"][keep][:, 0, 0, 0]]
        skipped += float(batch["skipped"].sum())
        assert not np.any((batch["mask"] == 1) & (batch["skipped"] == 1))
    return labels, values, skipped


def test_unreadable_eval_files_are_left_out_and_counted(folder):
    info = data.get_info(_config(folder))
    assert info.num_eval == 9  # files listed, before reading
    labels, values, skipped = _real(data.eval_batches(_config(folder), global_batch_size=4))
    assert collections.Counter(labels) == {0: 3, 1: 2, 2: 1}  # 6 readable images, with their own labels
    assert skipped == 3
    # No readable image appears twice and each carries its own class's pixel value.
    assert sorted(zip(labels, values)) == [(0, 100)] * 3 + [(1, 110)] * 2 + [(2, 120)]


def test_counts_are_exact_over_several_processes(folder):
    totals = collections.Counter()
    skipped = 0.0
    for process in range(3):
        labels, _, s = _real(data.eval_batches(_config(folder), global_batch_size=6, process_index=process,
                                               process_count=3))
        totals.update(labels)
        skipped += s
    assert totals == {0: 3, 1: 2, 2: 1} and skipped == 3


def test_training_still_replaces_unreadable_files(folder):
    config = _config(folder, train_split="test")
    batch = next(data.train_iterator(config, global_batch_size=9, seed=0))
    assert batch["image"].shape == (9, 4, 4, 3)  # full batches: each bad file replaced by a readable one
    assert "skipped" not in batch
    split = image_folder.ImageFolderSplit(str(folder / "test"), ("a", "b", "c"))
    assert [split[i]["label"] for i in range(len(split))] == [0, 0, 0, 1, 1, 1, 2, 2, 0]
    assert split.num_corrupt == 3


def test_without_skipping_an_unreadable_eval_file_stops_naming_it(folder):
    with pytest.raises(ValueError, match=r"unreadable image .*1_bad.png"):
        list(data.eval_batches(_config(folder, skip_corrupt_images=False), global_batch_size=4))


def test_an_empty_class_folder_is_an_error_naming_it(folder):
    (folder / "train" / "d").mkdir()
    (folder / "train" / "d" / "notes.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"class folder '.*train/d' holds no image"):
        data.get_info(_config(folder))
