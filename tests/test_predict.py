"""predict (tokenlearner_jax/predict.py): a ViT + TokenLearner trained a few hundred steps on the digits
classifies digit PNG files and a folder of them, with exactly the eval pipeline's logits; batched equals
one by one; a ViViT trained on (a subset of) the moving digits names digit and direction of a video
clip; class names come from each kind of dataset; attention maps and NesT's class-activation map are
drawn; user errors are one line naming the file."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import ROOT, run_python
from tokenlearner_jax import convert, recipes, data, models, predict
from tokenlearner_jax.data import digits, registry, video_digits
from tokenlearner_jax.weights import init_from

FIXTURES = os.path.join(ROOT, "tests", "fixtures")
# A tiny ViT + TokenLearner on digits, trained through main.py (the flags of tests/test_trainer.py).
TINY_DIGITS = [
    "--config=configs/quickstart.py",
    "--config.model.width=32", "--config.model.depth=2", "--config.model.num_heads=2",
    "--config.model.mlp_dim=64", "--config.model.token_learner.location=1",
    "--config.dataset.image_size=16", "--config.batch_size=32", "--config.eval_batch_size=100",
    "--config.log_every_steps=100", "--config.optimizer.warmup_steps=20", "--config.dataset.shift_pixels=1",
    "--config.num_train_steps=300", "--config.eval_every_steps=300", "--config.checkpoint_every_steps=300",
    "--config.optimizer.learning_rate=3e-3",
]


def predict_cli(workdir, *args, check=True):
    return run_python(["-m", "tokenlearner_jax.predict", f"--workdir={workdir}", *args], check=check)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """(workdir, folder of the first 100 test digits as PNG files, their labels)."""
    root = tmp_path_factory.mktemp("digits")
    workdir = str(root / "run")
    run_python(["main.py", f"--workdir={workdir}", *TINY_DIGITS], timeout=1200)
    images, labels = digits.load_split_arrays()["test"]
    folder = root / "pngs"
    for i in range(100):
        (folder / str(labels[i])).mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / str(labels[i]) / f"{i:03d}.png")
    return workdir, str(folder), labels[:100]


def eval_pipeline_logits(workdir, count):
    """The model's logits on the first `count` examples of the eval split, through data.eval_batches."""
    config = predict.run_config(workdir)
    variables, _ = init_from.restore_variables(workdir)
    batch = next(iter(data.eval_batches(config.dataset, global_batch_size=count)))
    return np.asarray(models.build(config.model).apply(variables, batch["image"], train=False))


@pytest.mark.slow
def test_five_digit_files_and_a_folder_are_classified(digits_run):
    workdir, folder, labels = digits_run
    files = [os.path.join(folder, str(labels[i]), f"{i:03d}.png") for i in range(5)]
    proc = predict_cli(workdir, "--format=jsonl", "--top_k=3", *files)
    rows = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert [r["input"] for r in rows] == files
    assert all([p["name"] for p in r["predictions"]] == [str(p["class"]) for p in r["predictions"]] for r in rows)
    predicted = [r["predictions"][0]["class"] for r in rows]
    # This run's eval accuracy was 81% here (300 steps of a tiny model): most, not all, are right.
    assert sum(p == label for p, label in zip(predicted, labels[:5])) >= 3, (predicted, labels[:5])
    assert all(1.0 >= r["predictions"][0]["probability"] >= r["predictions"][1]["probability"] for r in rows)

    proc = predict_cli(workdir, "--batch_size=16", folder)  # the table, a folder searched recursively
    lines = proc.stdout.strip().splitlines()
    assert lines[0].split()[:2] == ["input", "top-5"] and len(lines) == 101
    by_file = {line.split()[0]: int(line.split()[1]) for line in lines[1:]}
    truth = {os.path.join(folder, str(labels[i]), f"{i:03d}.png"): labels[i] for i in range(100)}
    accuracy = np.mean([by_file[path] == label for path, label in truth.items()])
    assert accuracy >= 0.6, accuracy  # 10 classes, chance 10%


@pytest.mark.slow
def test_predict_applies_the_eval_preprocessing_and_batching_changes_nothing(digits_run):
    """The PNG files give the eval pipeline's logits (same preprocessing); batches of 7 (the last one
    padded) give the logits of one-by-one prediction."""
    workdir, folder, labels = digits_run
    files = sorted((os.path.join(folder, str(labels[i]), f"{i:03d}.png") for i in range(20)), key=lambda p: p[-7:])
    batched = predict.run(workdir, files, batch_size=7, top_k=10)
    single = predict.run(workdir, files, batch_size=1, top_k=10)
    np.testing.assert_allclose(np.stack([r["logits"] for r in batched]), np.stack([r["logits"] for r in single]),
                               atol=1e-5, rtol=0)
    assert [[p["class"] for p in r["predictions"]] for r in batched] == \
        [[p["class"] for p in r["predictions"]] for r in single]
    np.testing.assert_allclose(np.stack([r["logits"] for r in batched]), eval_pipeline_logits(workdir, 20),
                               atol=1e-5, rtol=0)
    probabilities = [sum(p["probability"] for p in r["predictions"]) for r in batched]
    np.testing.assert_allclose(probabilities, 1.0, atol=1e-6)  # top-10 of 10 classes: all of the softmax


@pytest.mark.slow
def test_token_learner_attention_maps_are_drawn(digits_run, tmp_path):
    workdir, folder, labels = digits_run
    files = [os.path.join(folder, str(labels[i]), f"{i:03d}.png") for i in range(2)]
    predict.run(workdir, files, attention_dir=str(tmp_path), batch_size=4)
    assert sorted(os.listdir(tmp_path)) == ["000_token_learner.png", "001_token_learner.png"]


@pytest.mark.slow
def test_user_errors_are_one_line_naming_the_file(digits_run, tmp_path):
    workdir, folder, _ = digits_run
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(predict.InputError, match=f"^{broken}: not a readable image"):
        predict.run(workdir, [str(broken)])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(predict.InputError, match=f"^{empty}: no .jpg/.jpeg/.png/.*files in this folder"):
        predict.run(workdir, [str(empty)])
    no_checkpoint = tmp_path / "no_checkpoint"
    no_checkpoint.mkdir()
    (no_checkpoint / "config.json").write_text(open(os.path.join(workdir, "config.json")).read())
    with pytest.raises(predict.InputError, match=f"--workdir={no_checkpoint}: no checkpoint in {no_checkpoint}"):
        predict.run(str(no_checkpoint), [folder])
    proc = predict_cli(workdir, str(tmp_path / "missing.png"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == f"predict: {tmp_path / 'missing.png'}: no such file or directory"


def test_class_names_of_each_kind_of_dataset(tmp_path, monkeypatch):
    def source(**fields):
        config = data.default_dataset_config()
        config.update(fields)
        return registry.get_source(config)

    assert source(name="digits").class_names == tuple(str(d) for d in range(10))
    for split in ("train", "test"):
        for name in ("cat", "dog"):
            (tmp_path / "folder" / split / name).mkdir(parents=True)
            Image.new("RGB", (4, 4)).save(tmp_path / "folder" / split / name / "a.png")  # an empty class is an error
    assert source(name="image_folder", data_dir=str(tmp_path / "folder")).class_names == ("cat", "dog")
    images, labels = digits.load_split_arrays()["train"]
    monkeypatch.setattr(digits, "load_split_arrays", lambda: {s: (images[:3], labels[:3]) for s in ("train", "test")})
    moving = source(name="moving_digits", data_dir=str(tmp_path), num_frames=4)
    assert moving.class_names[:4] == tuple(f"{labels[0]}_{d}" for d in ("down", "left", "right", "up"))


def test_tfds_class_names_come_from_the_metadata(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    class TlPredictNames(tfds.core.GeneratorBasedBuilder):  # a tiny local dataset, prepared here
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["cat", "dog", "fish"])}))

        def _split_generators(self, dl_manager):
            del dl_manager
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(3):
                yield i, {"image": np.full((4, 4, 3), i, np.uint8), "label": i}

    TlPredictNames(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    config = data.default_dataset_config()
    config.update(name="tl_predict_names", data_dir=str(tmp_path))
    assert registry.get_source(config).class_names == ("cat", "dog", "fish")


def test_nest_class_activation_map_is_drawn_and_averages_to_the_logit(tmp_path):
    """A NesT checkpoint converted from the timm fixture: the map's mean over positions is the predicted
    class's logit, and --attention_dir draws it."""
    io = dict(np.load(os.path.join(FIXTURES, "nest_tiny_io.npz")))
    config = recipes.base()
    config.dataset.update(name="synthetic", num_classes=5, image_size=32)
    config.model = models.config("nest", variant="T", num_classes=5)
    config.model.update(dims=tuple(int(d) for d in io["dims"]), num_heads=tuple(int(h) for h in io["num_heads"]),
                        depths=tuple(int(d) for d in io["depths"]), patch_size=int(io["patch_size"]))
    workdir = str(tmp_path / "nest")
    convert.convert(config, os.path.join(FIXTURES, "nest_tiny.safetensors"), workdir)
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(image)
    predictor = predict.Predictor(workdir)
    [(_, _, logits, intermediates)] = predictor.predict([str(image)], batch_size=1, keep_intermediates=True)
    prediction = int(logits[0].argmax())
    cam = predict.class_activation_map(intermediates["feature_map"][0], predictor.variables["params"]["head"],
                                       prediction)
    assert cam.shape == (4, 4)  # the top-level grid: 32 / patch 2 / 2 / 2
    np.testing.assert_allclose(cam.mean(), logits[0, prediction], atol=1e-5)
    predict.run(workdir, [str(image)], attention_dir=str(tmp_path / "maps"))
    assert os.listdir(tmp_path / "maps") == ["image_class_attention.png"]

    # A run whose image folder is not on this machine: class ids for names, the natural-image crop.
    config.dataset.update(name="image_folder", data_dir=str(tmp_path / "gone"), num_classes=-1)
    elsewhere = predict.Predictor(workdir, config)
    assert elsewhere.class_names == ("0", "1", "2", "3", "4") and elsewhere._preprocessor.natural_images


@pytest.fixture(scope="module")
def moving_digits_run(tmp_path_factory):
    """(workdir, data_dir): a tiny ViViT trained on the moving 0s and 1s (8 classes: digit x direction),
    clips written here in the moving digits' own layout and read by main.py as config.dataset.data_dir."""
    root = tmp_path_factory.mktemp("moving")
    arrays = digits.load_split_arrays()
    subset = {split: (images[labels < 2], labels[labels < 2]) for split, (images, labels) in arrays.items()}
    original = digits.load_split_arrays
    digits.load_split_arrays = lambda: subset
    try:
        video_digits.generate(os.path.join(str(root), video_digits.NAME))
    finally:
        digits.load_split_arrays = original
    workdir = str(root / "run")
    run_python(["main.py", f"--workdir={workdir}", "--config=configs/quickstart_video.py",
                f"--config.dataset.data_dir={root}", "--config.model.num_classes=8", "--config.model.width=32",
                "--config.model.num_heads=2", "--config.model.mlp_dim=64", "--config.model.depth=2",
                "--config.num_train_steps=150", "--config.eval_every_steps=150", "--config.checkpoint_every_steps=150",
                "--config.optimizer.warmup_steps=20", "--config.eval_batch_size=64"], timeout=1800)
    return workdir, str(root)


@pytest.mark.slow
def test_a_moving_digits_clip_gets_its_digit_and_direction(moving_digits_run, tmp_path):
    workdir, data_dir = moving_digits_run
    test_dir = os.path.join(data_dir, video_digits.NAME, "test")
    clips = sorted(os.path.join(test_dir, c, f) for c in os.listdir(test_dir) for f in os.listdir(os.path.join(test_dir, c)))
    proc = predict_cli(workdir, "--format=jsonl", clips[0])
    [row] = [json.loads(line) for line in proc.stdout.strip().splitlines()]
    assert row["predictions"][0]["name"] == os.path.basename(os.path.dirname(clips[0]))  # e.g. '0_down'
    results = predict.run(workdir, [test_dir], batch_size=16)
    names = [r["predictions"][0]["name"] for r in results]
    truth = [os.path.basename(os.path.dirname(r["input"])) for r in results]
    assert np.mean([n == t for n, t in zip(names, truth)]) >= 0.7  # 8 classes, chance 12.5%
    # the eval pipeline's logits on the same clips (the split in the same sorted order)
    np.testing.assert_allclose(np.stack([r["logits"] for r in results[:16]]), eval_pipeline_logits(workdir, 16),
                               atol=1e-4, rtol=0)
    predict.run(workdir, clips[:1], attention_dir=str(tmp_path))
    assert len(os.listdir(tmp_path)) == 1
