"""Multi-label video end to end: a tiny X(2+1)D with TokenLearner trained and evaluated by trainer.run on
the bundled moving digits (a few clips, written into the test's folder), several clips per video
aggregated by their max and by their mean, and the trainer's mAP and per-class AP table checked against
scikit-learn on scores computed here, clip by clip; the Charades and AViD configs without their data
stop with one line naming the dataset and the layout."""

import csv

import jax
import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from helpers import load_config
from tokenlearner_jax import data, models, recipes
from tokenlearner_jax.data import video_digits
from tokenlearner_jax.train import trainer

TEST_CLIPS = 24


def _config(aggregation):
    config = recipes.base("multilabel")
    # 8 consecutive frames of the 16-frame clips: 3 evaluation clips per video start at frames 0, 4 and 8.
    config.dataset = recipes.dataset(name="moving_digits_multilabel", moving_digits_directions=True, image_size=32,
                                     num_frames=8, frame_stride=1, augment="none", eval_temporal_views=3)
    config.model = models.config("x2plus1d", variant="tiny", num_classes=14, widths=(8, 16), depths=(1, 1),
                                 dropout_rate=0.0, head_bias_init=-2.0, bn_momentum=0.5,
                                 token_learner=dict(enabled=True, num_tokens=4, location=-1))
    config.multilabel.view_aggregation = aggregation
    # A large step size, so that after a few steps the scores depend on the clip well above float noise.
    config.optimizer = recipes.optimizer(name="adam", learning_rate=0.03, warmup_steps=0, decay="constant",
                                         weight_decay=0.0)
    config.batch_size, config.eval_batch_size = 8, 10  # 24 test clips: the last batch is padded
    config.num_train_steps, config.log_every_steps, config.checkpoint_every_steps = 8, 8, 8
    return config


def _clip_scores(config, state):
    """Sigmoid probabilities of every real test video's evaluation clips `[videos, clips, classes]` and the
    labels `[videos, classes]`, one clip at a time through the model (not the task's eval step)."""
    model = models.build(config.model)
    apply = jax.jit(lambda variables, clip: jax.nn.sigmoid(model.apply(variables, clip, train=False)))
    variables = {"params": state.params, **state.model_state}
    scores, labels = [], []
    for batch in data.eval_batches(config.dataset, global_batch_size=config.eval_batch_size):
        keep = np.asarray(batch["mask"]) > 0
        clips = np.asarray(batch["image"])  # [batch, clips, frames, height, width, 3]
        per_clip = np.stack([np.asarray(apply(variables, clips[:, v])) for v in range(clips.shape[1])], axis=1)
        scores.append(per_clip[keep])
        labels.append(np.asarray(batch["label"])[keep])
    return np.concatenate(scores), np.concatenate(labels)


def _eval_step_scores(config, state):
    """The task's per-video scores `[videos, classes]` from its jitted eval step (clips aggregated there)."""
    setup = trainer.Setup(config, trainer.resolve_dataset(config), total_steps=config.num_train_steps)
    scores = []
    with setup.context():
        for batch in data.eval_batches(config.dataset, global_batch_size=config.eval_batch_size):
            out = jax.device_get(setup.eval_step(state, setup.to_global(batch)))
            scores.append(np.asarray(out["scores"])[np.asarray(out["mask"]) > 0])
    return np.concatenate(scores)


def _sklearn_map(scores, labels):
    keep = labels.sum(axis=0) > 0
    return average_precision_score(labels[:, keep], scores[:, keep], average="macro"), int((~keep).sum())


@pytest.mark.slow
def test_map_over_videos_with_clip_aggregation_equals_sklearn(tmp_path, monkeypatch):
    """Per video: the eval step's scores are the max (or mean) of the clips' sigmoid probabilities computed
    here clip by clip; over the split: eval/mAP and the per-class table are scikit-learn's on those scores."""
    monkeypatch.setattr(video_digits, "MULTILABEL_CLIPS", {"train": 16, "test": TEST_CLIPS})
    monkeypatch.setenv("TOKENLEARNER_JAX_CACHE", str(tmp_path / "cache"))
    workdir = str(tmp_path / "run")
    config = _config("max")
    state, metrics = trainer.run(config, workdir)

    clip_scores, labels = _clip_scores(config, state)
    assert clip_scores.shape == (TEST_CLIPS, 3, 14) and labels.shape == (TEST_CLIPS, 14)
    assert np.abs(clip_scores[:, 0] - clip_scores[:, 2]).max() > 1e-3  # the clips of a video differ
    video_scores = _eval_step_scores(config, state)
    np.testing.assert_allclose(video_scores, clip_scores.max(axis=1), atol=1e-6)
    expected, without_positives = _sklearn_map(video_scores, labels)
    assert metrics["eval/num_examples"] == TEST_CLIPS
    assert metrics["eval/mAP"] == pytest.approx(expected, abs=1e-9)
    assert metrics["eval/classes_without_positives"] == without_positives

    with open(tmp_path / "run" / "eval_per_class_ap.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["class"]) for row in rows] == list(range(14))
    for c, row in enumerate(rows):
        assert int(row["positives"]) == labels[:, c].sum()
        if labels[:, c].any():
            assert float(row["average_precision"]) == pytest.approx(
                average_precision_score(labels[:, c], video_scores[:, c]), abs=1e-6)
        else:
            assert row["average_precision"] == ""

    # The same checkpoint with the mean over each video's clips.
    mean_config = _config("mean")
    mean_metrics = trainer.evaluate_checkpoint(mean_config, workdir)
    mean_scores = _eval_step_scores(mean_config, state)
    np.testing.assert_allclose(mean_scores, clip_scores.mean(axis=1), atol=1e-6)
    expected_mean, _ = _sklearn_map(mean_scores, labels)
    assert mean_metrics["eval/mAP"] == pytest.approx(expected_mean, abs=1e-9)
    assert abs(expected_mean - expected) > 1e-6  # the two aggregations rank the videos differently here


@pytest.mark.parametrize("name, dataset", [("charades_tl.py", "charades"), ("vivit_b16x2_tl_charades.py", "charades"),
                                           ("avid_tl.py", "avid")])
def test_configs_without_their_data_stop_with_one_line_naming_the_dataset_and_layout(tmp_path, name, dataset):
    config = load_config(name)
    config.dataset.data_dir = str(tmp_path / "absent")
    with pytest.raises(data.DatasetNotFoundError) as error:
        trainer.run(config, str(tmp_path / "run"))
    message = str(error.value)
    assert f"dataset {dataset!r}" in message and "\n" not in message
    assert ("Charades_v1_480/<id>.mp4" if dataset == "charades" else "<data_dir>/<split>.csv") in message
