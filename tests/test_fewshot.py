"""Few-shot linear evaluation: the closed-form ridge regression against direct solves, leave-one-out
against refitting, accuracy against the number of shots, and the evaluator inside a training run and
on a checkpoint (--mode=fewshot), in process."""

import numpy as np
import pytest

from helpers import parse_config
from tokenlearner_jax.evaluate import fewshot
from tokenlearner_jax.train import metrics_log, trainer

# A tiny ViT + TokenLearner on digits (the quickstart shrunk), parsed as main.py parses its flags.
TINY = [
    "--config=configs/quickstart.py",
    "--config.model.width=32", "--config.model.depth=2", "--config.model.num_heads=2",
    "--config.model.mlp_dim=64", "--config.model.token_learner.location=1",
    "--config.dataset.image_size=16", "--config.batch_size=32", "--config.eval_batch_size=120",
    "--config.log_every_steps=5", "--config.optimizer.warmup_steps=2", "--config.dataset.shift_pixels=1",
]


@pytest.mark.parametrize("n, d, primal", [(40, 9, True), (9, 40, False)])
def test_ridge_weights_equal_a_direct_solve(n, d, primal):
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 3))
    ridge = fewshot.RidgeRegression(x, y)
    assert ridge.primal == primal  # the smaller of X^T X [d, d] and X X^T [n, n] is decomposed
    for l2 in (1e-3, 0.5, 30.0):
        direct = np.linalg.solve(x.T @ x + l2 * np.eye(d), x.T @ y)
        np.testing.assert_allclose(ridge.weights(l2), direct, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n, d", [(30, 6), (6, 30)])
def test_leave_one_out_predictions_equal_refitting_without_the_example(n, d):
    rng = np.random.default_rng(d)
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, 4))
    ridge = fewshot.RidgeRegression(x, y)
    for l2 in (0.01, 3.0):
        refit = []
        for i in range(n):
            rest_x, rest_y = np.delete(x, i, axis=0), np.delete(y, i, axis=0)
            weights = np.linalg.solve(rest_x.T @ rest_x + l2 * np.eye(d), rest_x.T @ rest_y)
            refit.append(x[i] @ weights)
        np.testing.assert_allclose(ridge.leave_one_out(l2), np.stack(refit), rtol=1e-7, atol=1e-9)


def planted(num_classes=10, dim=32, noise=1.5, seed=0):
    """Features = class mean + Gaussian noise; returns a sampler of (features [n, dim], labels [n])."""
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(num_classes, dim))

    def draw(n):
        labels = rng.integers(0, num_classes, n)
        return means[labels] + noise * rng.normal(size=(n, dim)), labels

    return draw


def test_accuracy_rises_with_the_number_of_shots_on_planted_classes():
    draw = planted()
    (train_x, train_y), (test_x, test_y) = draw(2000), draw(1000)
    results = fewshot.evaluate(train_x, train_y, test_x, test_y, 10, shots=(1, 5, 10, 25), seeds=3)
    mean = {k: np.mean([r.accuracy for r in per_seed]) for k, per_seed in results.items()}
    assert mean[1] < mean[5] < mean[10] < mean[25], mean
    assert mean[1] > 0.2 and mean[25] > 0.85, mean  # chance is 0.1
    assert [r.num_train for r in results[25]] == [250] * 3


def test_regulariser_is_chosen_without_looking_at_the_test_labels():
    draw = planted(seed=1)
    (train_x, train_y), (test_x, test_y) = draw(100), draw(300)
    chosen = fewshot.linear_probe(train_x, train_y, test_x, test_y, 10)
    scrambled = fewshot.linear_probe(train_x, train_y, test_x, np.roll(test_y, 1), 10)
    assert chosen.l2 == scrambled.l2 and chosen.accuracy != scrambled.accuracy


def test_shots_are_drawn_per_class_without_repetition():
    labels = np.repeat(np.arange(4), [10, 10, 10, 3])
    index = fewshot.sample_shots(labels, 5, 4, np.random.default_rng(0))
    assert len(set(index)) == len(index)
    assert np.bincount(labels[index]).tolist() == [5, 5, 5, 3]  # a class with fewer examples gives all


def test_periodic_fewshot_runs_in_training_and_on_the_checkpoint(tmp_path, caplog):
    workdir = str(tmp_path / "run")
    fewshot_flags = ["--config.fewshot.every_steps=5", "--config.fewshot.datasets=('digits','cifar100')",
                     "--config.fewshot.shots=(1,5)", "--config.fewshot.seeds=2",
                     f"--config.dataset.data_dir={tmp_path / 'tfds'}"]  # no cifar100 there
    trainer.run(parse_config([*TINY, "--config.num_train_steps=10", *fewshot_flags]), workdir)
    assert "'cifar100' skipped" in caplog.text and "tfds build cifar100" in caplog.text
    records = [r for r in metrics_log.read_metrics(workdir) if "fewshot/digits_5shot" in r]
    assert [r["step"] for r in records] == [5, 10]
    final = records[-1]
    names = {f"fewshot/digits_{k}shot{suffix}" for k in (1, 5) for suffix in ("", "_seed0", "_seed1")}
    assert set(final) == {"step"} | names
    assert final["fewshot/digits_5shot"] == pytest.approx(
        (final["fewshot/digits_5shot_seed0"] + final["fewshot/digits_5shot_seed1"]) / 2)
    assert final["fewshot/digits_5shot"] > 0.2  # ten classes: chance is 0.1
    assert not any(k.startswith("fewshot/cifar100") for r in records for k in r)

    # --mode=fewshot on the finished run's checkpoint reproduces the step-10 figures and appends them.
    trainer.fewshot_checkpoint(parse_config([*TINY, *fewshot_flags]), workdir)
    again = [r for r in metrics_log.read_metrics(workdir) if "fewshot/digits_5shot" in r]
    assert len(again) == 3 and again[-1] == final
