"""Tests for tokenlearner_jax.data (digits, synthetic, image_folder, TFDS)."""

import collections
import hashlib
import itertools
import json
import logging

import numpy as np
from PIL import Image
import pytest

from tokenlearner_jax import data
from tokenlearner_jax.data import digits
from tokenlearner_jax.data import image_folder
from tokenlearner_jax.data import preprocess


def _config(**overrides):
    config = data.default_dataset_config()
    config.update(overrides)
    return config


def _key(image, label):
    """Hashable identity of one preprocessed example."""
    digest = hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()
    return (np.asarray(label).tobytes(), digest)


def _keys(batch, mask=None):
    keys = [_key(i, l) for i, l in zip(batch["image"], batch["label"])]
    if mask is not None:
        keys = [k for k, m in zip(keys, mask) if m]
    return keys


def _assert_batches_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


# ---------------------------------------------------------------- config


def test_default_config_fields():
    config = data.default_dataset_config()
    assert set(config.keys()) == {
        "name",
        "data_dir",
        "image_size",
        "train_split",
        "eval_split",
        "num_classes",
        "augment",
        "shift_pixels",
        "eval_crop_fraction",
        "normalize",
        "num_workers",
        "skip_corrupt_images",
        "num_frames",
        "frame_stride",
        "eval_temporal_views",
        "eval_spatial_views",
        "randaugment_num_ops",
        "randaugment_magnitude",
        "randaugment_magnitude_std",
        "random_erasing_prob",
        "synthetic_train_size",
        "synthetic_eval_size",
        "moving_digits_directions",
    }
    assert (config.name, config.image_size, config.augment, config.normalize, config.num_classes) == (
        "digits",
        32,
        "shift",
        "minus_one_one",
        -1,
    )
    config.data_dir = "/some/dir"  # None placeholder accepts a str.


@pytest.mark.parametrize(
    "field,value",
    [
        ("augment", "mixup"),
        ("normalize", "zscore"),
        ("image_size", 0),
        ("eval_crop_fraction", 1.5),
        ("num_classes", 7),
    ],
)
def test_bad_config_value_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        data.get_info(_config(**{field: value}))


def test_batch_not_divisible_by_process_count():
    with pytest.raises(ValueError, match="process_count"):
        data.train_iterator(_config(), global_batch_size=10, seed=0, process_count=3)
    with pytest.raises(ValueError, match="process_count"):
        data.eval_batches(_config(), global_batch_size=10, process_count=4)


# ---------------------------------------------------------------- digits


def test_digits_info():
    info = data.get_info(_config())
    assert info == data.DatasetInfo(
        name="digits",
        num_classes=10,
        image_shape=(32, 32, 3),
        num_train=1437,
        num_eval=360,
        multi_label=False,
    )


def test_digits_split_fixed_and_stratified():
    first = {k: v.copy() for k, v in digits.split_indices().items()}
    digits.split_indices.cache_clear()
    digits.load_split_arrays.cache_clear()
    second = digits.split_indices()
    for split in ("train", "test"):
        np.testing.assert_array_equal(first[split], second[split])
    train, test = second["train"], second["test"]
    assert len(train) == 1437 and len(test) == 360
    assert not set(train) & set(test)
    assert sorted(set(train) | set(test)) == list(range(1797))
    labels = digits.load_split_arrays()
    all_counts = np.bincount(np.concatenate([labels["train"][1], labels["test"][1]]), minlength=10)
    test_counts = np.bincount(labels["test"][1], minlength=10)
    # Stratified: each class's share of the test split matches its share overall.
    np.testing.assert_allclose(test_counts, all_counts * 360 / 1797, atol=1)


@pytest.mark.parametrize(
    "normalize,lo,hi", [("minus_one_one", -1, 1), ("unit", 0, 1), ("imagenet", -2.2, 2.7)]
)
def test_digits_batches_shapes_dtypes_range(normalize, lo, hi):
    config = _config(normalize=normalize)
    batch = next(data.train_iterator(config, global_batch_size=16, seed=0))
    assert batch["image"].shape == (16, 32, 32, 3)
    assert batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    assert lo <= batch["image"].min() < batch["image"].max() <= hi
    if normalize != "imagenet":  # Grayscale replicated to 3 channels.
        np.testing.assert_array_equal(batch["image"][..., 0], batch["image"][..., 2])
    ev = next(data.eval_batches(config, global_batch_size=16))
    assert ev["image"].shape == (16, 32, 32, 3) and ev["mask"].dtype == np.float32
    assert set(np.unique(ev["label"])) <= set(range(10))


def test_shift_augmentation_is_random_and_eval_is_not():
    config = _config(augment="shift", normalize="unit")
    a = next(data.train_iterator(config, global_batch_size=32, seed=0))
    b = next(data.train_iterator(config, global_batch_size=32, seed=0))
    c = next(data.train_iterator(config, global_batch_size=32, seed=1))
    _assert_batches_equal([a], [b])
    assert not np.array_equal(a["image"], c["image"])
    e1 = list(data.eval_batches(config, global_batch_size=120))
    e2 = list(data.eval_batches(config, global_batch_size=120))
    _assert_batches_equal(e1, e2)


# ---------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("num_workers", [0, 2])
def test_checkpoint_restore_is_exact_across_epochs(num_workers):
    # 8 batches of 200 = 1600 > 1437 train examples: batch 8 crosses an epoch.
    config = _config(num_workers=num_workers)
    it = data.train_iterator(config, global_batch_size=200, seed=3)
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    expected = [next(it) for _ in range(3)]
    restored = data.train_iterator(config, global_batch_size=200, seed=3)
    restored.set_state(state)
    _assert_batches_equal(expected, [next(restored) for _ in range(3)])


def test_epochs_cover_split_and_reshuffle():
    config = _config(name="synthetic", synthetic_train_size=24, augment="none", image_size=4, num_classes=5)
    it = data.train_iterator(config, global_batch_size=8, seed=0)
    batches = [next(it) for _ in range(6)]
    epoch1 = sorted(itertools.chain(*map(_keys, batches[:3])))
    epoch2 = sorted(itertools.chain(*map(_keys, batches[3:])))
    assert len(set(epoch1)) == 24 and epoch1 == epoch2  # Each example once.
    order1 = list(itertools.chain(*map(_keys, batches[:3])))
    order2 = list(itertools.chain(*map(_keys, batches[3:])))
    assert order1 != order2  # A new order each epoch.


# ---------------------------------------------------------------- sharding


def test_process_sharding_matches_global_batch():
    config = _config(augment="shift")
    kw = dict(global_batch_size=12, seed=5)
    full = data.train_iterator(config, **kw)
    shards = [data.train_iterator(config, process_index=p, process_count=2, **kw) for p in range(2)]
    for _ in range(3):
        g = next(full)
        local = [next(s) for s in shards]
        assert local[0]["image"].shape == (6, 32, 32, 3)
        union = _keys(local[0]) + _keys(local[1])
        assert collections.Counter(union) == collections.Counter(_keys(g))
        # Process p holds global positions p, p + P, p + 2P, ... of the step.
        for p in range(2):
            np.testing.assert_array_equal(local[p]["image"], g["image"][p::2])


def test_eval_batches_cover_split_once():
    config = _config()
    (reference,) = list(data.eval_batches(config, global_batch_size=400))
    assert reference["mask"].sum() == 360
    want = collections.Counter(_keys(reference, reference["mask"]))
    got = collections.Counter()
    counts = []
    for p in range(3):
        batches = list(data.eval_batches(config, global_batch_size=48, process_index=p, process_count=3))
        counts.append(len(batches))
        for b in batches:
            assert b["image"].shape == (16, 32, 32, 3)
            pad = b["mask"] == 0
            assert np.all(b["image"][pad] == 0) and np.all(b["label"][pad] == 0)
            got.update(_keys(b, b["mask"]))
    assert counts == [8, 8, 8]  # ceil(360 / 48) = 8 on every process.
    assert got == want and sum(got.values()) == 360


# ---------------------------------------------------------------- synthetic


def test_synthetic_shapes_and_determinism():
    config = _config(name="synthetic", image_size=16, synthetic_train_size=40, synthetic_eval_size=10)
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (1000, 40, 10)
    a = next(data.train_iterator(config, global_batch_size=8, seed=0))
    b = next(data.train_iterator(config, global_batch_size=8, seed=0))
    assert a["image"].shape == (8, 16, 16, 3) and a["label"].dtype == np.int32
    _assert_batches_equal([a], [b])
    ev = list(data.eval_batches(config, global_batch_size=4))
    assert len(ev) == 3 and ev[-1]["mask"].tolist() == [1, 1, 0, 0]
    info = data.get_info(_config(name="synthetic", num_classes=7))
    assert info.num_classes == 7


# ---------------------------------------------------------------- preprocess


def test_preprocess_ops():
    rng = np.random.default_rng(0)
    image = rng.integers(1, 256, (30, 50, 3), dtype=np.uint8)
    crop = preprocess.resize_central_crop(image, 16, 0.875)
    assert crop.shape == (16, 16, 3) and crop.dtype == np.uint8
    for seed in range(5):
        out = preprocess.inception_crop(image, 12, np.random.default_rng(seed))
        assert out.shape == (12, 12, 3) and out.dtype == np.uint8
    small = np.arange(1, 26, dtype=np.uint8).reshape(5, 5, 1)
    dy, dx = np.random.default_rng(3).integers(-2, 3, size=2)  # (2, -2)
    shifted = preprocess.random_shift(small, 2, np.random.default_rng(3))
    expected = np.zeros_like(small)
    expected[2:, :3] = small[:3, 2:]  # Moved down by 2 and left by 2.
    assert (dy, dx) == (2, -2)
    np.testing.assert_array_equal(shifted, expected)
    np.testing.assert_array_equal(preprocess.encode_label([1, 3], 5, True), [0, 1, 0, 1, 0])
    natural = preprocess.Preprocessor.from_config(
        _config(augment="inception_crop", image_size=24), natural_images=True
    )
    out = natural.train(image, np.random.default_rng(0))
    assert out.shape == (24, 24, 3) and out.dtype == np.float32


# ---------------------------------------------------------------- image_folder


def _write_png(path, value, size=(10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((*size, 3), value, np.uint8)).save(path)


@pytest.fixture
def folder(tmp_path):
    for split, n in (("train", 3), ("test", 2)):
        for c, name in enumerate(("cat", "dog")):
            for i in range(n):
                _write_png(tmp_path / split / name / f"{i}.png", 40 * c + 10 * i + 5)
    (tmp_path / "train" / "dog" / "1b_corrupt.png").write_bytes(b"not a png")
    (tmp_path / "train" / "dog" / "notes.txt").write_text("ignored")
    return tmp_path


def test_image_folder(folder, caplog):
    config = _config(
        name="image_folder", data_dir=str(folder), image_size=8, augment="inception_crop", normalize="unit"
    )
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval) == (2, 7, 4)

    split = image_folder.ImageFolderSplit(str(folder / "train"), ("cat", "dog"))
    with caplog.at_level(logging.WARNING):
        examples = [split[i] for i in range(len(split))]
    assert split.num_corrupt == 1
    assert "1b_corrupt.png" in caplog.text
    # Sorted dog files: 0.png, 1.png, 1b_corrupt.png, 2.png; the corrupt one
    # (index 5) is replaced by the next readable file, dog/2.png (index 6).
    np.testing.assert_array_equal(examples[5]["image"], examples[6]["image"])
    assert [e["label"] for e in examples] == [0, 0, 0, 1, 1, 1, 1]

    batch = next(data.train_iterator(config, global_batch_size=7, seed=0))
    assert batch["image"].shape == (7, 8, 8, 3)
    (ev,) = list(data.eval_batches(config, global_batch_size=4))
    assert ev["label"].tolist() == [0, 0, 1, 1] and ev["mask"].sum() == 4


def test_image_folder_can_stop_on_a_corrupt_image_naming_it(folder):
    config = _config(name="image_folder", data_dir=str(folder), image_size=8, skip_corrupt_images=False)
    with pytest.raises(ValueError, match=r"unreadable image .*1b_corrupt.png"):
        next(data.train_iterator(config, global_batch_size=7, seed=0))


def test_image_folder_missing(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="expected layout"):
        data.get_info(_config(name="image_folder", data_dir=str(tmp_path)))


# ---------------------------------------------------------------- TFDS


def test_tfds_missing_dataset(tmp_path):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.get_info(_config(name="mnist", data_dir=str(tmp_path)))
    message = str(err.value)
    assert "'mnist'" in message and str(tmp_path) in message
    assert "tfds build mnist --file_format=array_record" in message
    with pytest.raises(data.DatasetNotFoundError, match="no_such_dataset_xyz"):
        data.get_info(_config(name="no_such_dataset_xyz", data_dir=str(tmp_path)))


@pytest.fixture(scope="module")
def tfds_dir(tmp_path_factory):
    """Prepares tiny local TFDS datasets (no network): array_record + tfrecord."""
    tfds = pytest.importorskip("tensorflow_datasets")
    root = tmp_path_factory.mktemp("tfds")

    def builder_class(name, label_feature, make_label):
        def _info(self):
            # No label_feature: unlabelled like celeb_a (images with attributes, no 'label').
            other = {"label": label_feature} if label_feature is not None else {"smiling": tfds.features.Tensor(
                shape=(), dtype=np.bool_)}
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({"image": tfds.features.Image(shape=(None, None, 3)), **other}),
            )

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples(10), "test": self._generate_examples(5)}

        def _generate_examples(self, n):
            rng = np.random.default_rng(n)
            for i in range(n):
                image = rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8)
                other = {"label": make_label(i)} if label_feature is not None else {"smiling": bool(i % 2)}
                yield i, {"image": image, **other}

        return type(
            name,
            (tfds.core.GeneratorBasedBuilder,),
            dict(
                VERSION=tfds.core.Version("1.0.0"),
                _info=_info,
                _split_generators=_split_generators,
                _generate_examples=_generate_examples,
            ),
        )

    single = builder_class("TlTestSingle", tfds.features.ClassLabel(num_classes=3), lambda i: i % 3)
    multi = builder_class(
        "TlTestMulti",
        tfds.features.Sequence(tfds.features.ClassLabel(num_classes=4)),
        lambda i: [i % 4, 3][: 1 + i % 2],
    )
    tfrecord = builder_class("TlTestTfrecord", tfds.features.ClassLabel(num_classes=3), lambda i: i % 3)
    single(data_dir=str(root), file_format="array_record").download_and_prepare()
    multi(data_dir=str(root), file_format="array_record").download_and_prepare()
    tfrecord(data_dir=str(root), file_format="tfrecord").download_and_prepare()
    builder_class("TlTestUnlabelled", None, None)(data_dir=str(root), file_format="array_record").download_and_prepare()
    return str(root)


def test_tfds_single_label(tfds_dir):
    config = _config(
        name="tl_test_single",
        data_dir=tfds_dir,
        image_size=16,
        augment="inception_crop",
        normalize="imagenet",
        train_split="train[:80%]",
    )
    info = data.get_info(config)
    assert (info.num_classes, info.num_train, info.num_eval, info.multi_label) == (3, 8, 5, False)
    it = data.train_iterator(config, global_batch_size=4, seed=0)
    for _ in range(3):  # Crosses the 8-example epoch.
        batch = next(it)
    assert batch["image"].shape == (4, 16, 16, 3)
    assert batch["label"].dtype == np.int32
    ev = list(data.eval_batches(config, global_batch_size=4))
    assert len(ev) == 2 and ev[1]["mask"].tolist() == [1, 0, 0, 0]
    real = np.concatenate([b["label"][b["mask"] == 1] for b in ev])
    assert sorted(real.tolist()) == [0, 0, 1, 1, 2]


def test_tfds_multi_label(tfds_dir):
    config = _config(name="tl_test_multi", data_dir=tfds_dir, image_size=8)
    info = data.get_info(config)
    assert info.multi_label and info.num_classes == 4
    batch = next(data.train_iterator(config, global_batch_size=5, seed=0))
    assert batch["label"].shape == (5, 4) and batch["label"].dtype == np.float32
    assert set(np.unique(batch["label"])) <= {0.0, 1.0}
    assert np.all(batch["label"].sum(axis=1) >= 1)
    (ev,) = list(data.eval_batches(config, global_batch_size=8))
    assert ev["label"].shape == (8, 4) and np.all(ev["label"][5:] == 0)


def test_tfds_tfrecord_only_is_rejected(tfds_dir):
    with pytest.raises(data.DatasetNotFoundError, match="array_record"):
        data.get_info(_config(name="tl_test_tfrecord", data_dir=tfds_dir))


def test_an_unlabelled_tfds_dataset_trains_a_gan_and_is_refused_by_classification(tfds_dir):
    """celeb_a's case: images and attributes, no 'label' feature."""
    import jax
    from flax.core import meta

    from tokenlearner_jax import recipes
    from tokenlearner_jax.data import registry
    from tokenlearner_jax.evaluate import frechet
    from tokenlearner_jax.tasks import gan
    from tokenlearner_jax.train import trainer

    dataset = dict(name="tl_test_unlabelled", data_dir=tfds_dir, image_size=16, eval_split="test",
                   normalize="minus_one_one")
    info = data.get_info(_config(**dataset))
    assert (info.num_classes, info.num_train, info.num_eval, info.multi_label) == (0, 10, 5, False)
    assert registry.get_source(_config(**dataset)).class_names == ()
    batch = next(data.train_iterator(_config(**dataset), global_batch_size=4, seed=0))
    assert batch["image"].shape == (4, 16, 16, 3) and batch["label"].tolist() == [0, 0, 0, 0]
    assert -1.0 <= batch["image"].min() < batch["image"].max() <= 1.0
    (ev,) = list(data.eval_batches(_config(**dataset), global_batch_size=8))
    assert ev["mask"].tolist() == [1] * 5 + [0] * 3

    classification = recipes.base("classification")
    classification.dataset.update(dataset)
    with pytest.raises(ValueError, match=r"config.dataset.name='tl_test_unlabelled' has no labels .*task "
                                         r"'classification' needs them"):
        trainer.resolve_dataset(classification)

    config = recipes.base("gan")
    config.dataset.update(dataset)
    config.batch_size = config.eval_batch_size = 4
    config.gan.generator.update(variant="digits", dims=(16, 8, 8), num_heads=(1, 1, 1), latent_dim=8)
    config.gan.discriminator.update(variant="digits", channels=8)
    assert trainer.resolve_dataset(config) == info
    pooled = frechet.FeatureNetwork(name="mean pixel", dim=3, apply=lambda images: images.mean(axis=(1, 2)))
    task = gan.GanTask(config, info, total_steps=2, feature_network=pooled)
    state = meta.unbox(jax.jit(task.init_state)(jax.random.key(0)))
    state, metrics = jax.jit(task.train_step)(state, {k: jax.numpy.asarray(v) for k, v in batch.items()},
                                             jax.random.key(1))
    assert int(state.step) == 1 and all(np.isfinite(float(v)) for v in metrics.values())
