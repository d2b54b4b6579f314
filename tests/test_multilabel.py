"""The multilabel task: average precision equal to scikit-learn's, view aggregation by hand, and exact mAP
over the whole eval split in one process and in two (jax.distributed on CPU)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from helpers import ENV, ROOT, run_python
from tokenlearner_jax.evaluate import multilabel
from tokenlearner_jax.tasks.multilabel import aggregate_views


@pytest.mark.parametrize("ties", [False, True])
def test_mean_average_precision_equals_sklearn_macro_on_classes_with_positives(ties):
    rng = np.random.default_rng(3 + ties)
    for _ in range(50):
        n = int(rng.integers(2, 40))
        scores = rng.integers(0, 4, size=(n, 6)).astype(float) if ties else rng.random((n, 6))
        labels = (rng.random((n, 6)) < 0.25).astype(int)
        mean, per_class, excluded = multilabel.mean_average_precision(scores, labels)
        keep = labels.sum(axis=0) > 0
        assert excluded == int((~keep).sum()) and np.isnan(per_class[~keep]).all()
        if keep.any():
            assert mean == pytest.approx(average_precision_score(labels[:, keep], scores[:, keep], average="macro"),
                                         abs=1e-12)
            for c in np.flatnonzero(keep):
                assert per_class[c] == pytest.approx(average_precision_score(labels[:, c], scores[:, c]), abs=1e-12)


def test_average_precision_by_hand():
    # Ranked: 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (neg): AP = 1/2 * 1 + 1/2 * 2/3.
    assert multilabel.average_precision([0.9, 0.8, 0.7, 0.1], [1, 0, 1, 0]) == pytest.approx(0.5 + 1 / 3)
    # Tied scores form one threshold: both at 0.5, one positive -> precision 1/2 at recall 1.
    assert multilabel.average_precision([0.5, 0.5], [1, 0]) == pytest.approx(0.5)
    assert np.isnan(multilabel.average_precision([0.3, 0.2], [0, 0]))


def test_views_are_aggregated_by_their_mean_or_max():
    scores = np.array([[[0.2, 0.9], [0.6, 0.1], [0.4, 0.5]]])  # [1 example, 3 views, 2 classes]
    np.testing.assert_allclose(aggregate_views(scores, "mean"), [[0.4, 0.5]])
    np.testing.assert_allclose(aggregate_views(scores, "max"), [[0.6, 0.9]])
    with pytest.raises(ValueError, match="view_aggregation='median'"):
        aggregate_views(scores, "median")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_map_over_the_whole_split_is_exact_in_one_and_in_two_processes(tmp_path):
    run_python(["tests/multilabel_worker.py", str(tmp_path / "single"), str(tmp_path / "single.json")])
    address = f"127.0.0.1:{free_port()}"
    logs = [open(tmp_path / f"worker{i}.log", "w") for i in range(2)]  # files: a full pipe would block a collective
    workers = [subprocess.Popen([sys.executable, "tests/multilabel_worker.py", str(tmp_path / "pair"),
                                 str(tmp_path / f"p{i}.json"), address, "2", str(i)], cwd=ROOT, env=ENV,
                                stdout=logs[i], stderr=subprocess.STDOUT) for i in range(2)]
    for i, worker in enumerate(workers):
        worker.wait(timeout=900)
        assert worker.returncode == 0, (tmp_path / f"worker{i}.log").read_text()[-5000:]
    results = [json.loads((tmp_path / f"{name}.json").read_text()) for name in ("single", "p0", "p1")]
    assert [r["processes"] for r in results] == [1, 2, 2]
    for result in results:
        metrics = result["metrics"]
        assert result["num_scored"] == metrics["eval/num_examples"] == 50  # every example once, padding out
        assert metrics["eval/mAP"] == pytest.approx(result["sklearn_map"], abs=1e-9)
        assert metrics["eval/classes_without_positives"] == result["without_positives"]
    assert results[1]["metrics"] == results[2]["metrics"]  # both processes hold the same result
    assert results[1]["metrics"]["eval/mAP"] == pytest.approx(results[0]["metrics"]["eval/mAP"], abs=1e-6)
    table = (tmp_path / "single" / "eval_per_class_ap.csv").read_text().splitlines()
    assert table[0] == "class,average_precision,positives" and len(table) == 13
    assert os.path.exists(tmp_path / "pair" / "eval_per_class_ap.csv")
