"""metrics.jsonl keeps its history: a resume drops only records past the restored step (into
metrics_dropped.jsonl, replaced in one rename, never truncated in place), and the training window
carried through a checkpoint makes a stopped-and-resumed run log what an uninterrupted one logs. The
TensorBoard event files, written without TensorFlow, read back through TensorFlow's own reader."""

import glob
import json
import logging
import os
import subprocess
import sys
import zlib

import numpy as np
import pytest

from tokenlearner_jax.train import metrics_log, tensorboard_events


def _records(workdir, name=metrics_log.METRICS_FILE):
    with open(os.path.join(workdir, name)) as f:
        return [json.loads(line) for line in f]


def test_a_resume_keeps_records_up_to_its_step_and_moves_the_rest_aside(tmp_path):
    workdir = str(tmp_path)
    log = metrics_log.MetricsLog(workdir)
    for step in (0, 10, 20, 30):
        log.write(step, {"train/loss": step / 10})
    log.close()
    with open(os.path.join(workdir, "metrics.jsonl"), "a") as f:
        f.write('{"step": 40, "train/lo')  # a line cut short by kill -9
    inode = os.stat(os.path.join(workdir, "metrics.jsonl")).st_ino

    log = metrics_log.MetricsLog(workdir, resume_step=20)
    assert [r["step"] for r in _records(workdir)] == [0, 10, 20]
    assert os.stat(os.path.join(workdir, "metrics.jsonl")).st_ino != inode  # replaced, not truncated
    with open(os.path.join(workdir, metrics_log.DROPPED_FILE)) as f:
        dropped = f.read().splitlines()
    assert json.loads(dropped[0])["step"] == 30 and dropped[1] == '{"step": 40, "train/lo'
    log.write(30, {"train/loss": 3.5})
    log.close()
    assert [r["step"] for r in metrics_log.read_metrics(workdir)] == [0, 10, 20, 30]


def test_a_run_from_scratch_moves_every_earlier_record_aside(tmp_path):
    workdir = str(tmp_path)
    log = metrics_log.MetricsLog(workdir)
    log.write(0, {"model/num_params": 5})
    log.close()
    metrics_log.MetricsLog(workdir, resume_step=0).close()
    assert _records(workdir) == [] and _records(workdir, metrics_log.DROPPED_FILE)[0]["model/num_params"] == 5


def test_a_window_carried_through_a_checkpoint_summarises_like_an_unbroken_one():
    steps = [(s, {"train/loss": np.float32(1 / s), "train/skipped": np.float32(s % 2)}) for s in range(1, 11)]
    whole = metrics_log.TrainWindow()
    for step, metrics in steps:
        whole.add(step, metrics)

    first = metrics_log.TrainWindow()
    for step, metrics in steps[:4]:  # a signal after step 4, between two log steps
        first.add(step, metrics)
    carried = json.loads(json.dumps(first.to_json()))  # through the checkpoint's manifest
    resumed = metrics_log.TrainWindow.from_json(carried)
    for step, metrics in steps[4:]:
        resumed.add(step, metrics)
    assert resumed.summary(sums=("train/skipped",)) == whole.summary(sums=("train/skipped",))
    assert whole.summary(sums=("train/skipped",))["train/skipped"] == 5.0
    assert metrics_log.TrainWindow().summary() == {}


def test_crc32c_of_the_standard_check_string_and_of_a_single_bit():
    assert tensorboard_events.crc32c(b"123456789") == 0xE3069283  # the published CRC-32C check value
    assert tensorboard_events.crc32c(b"") == 0
    assert tensorboard_events.crc32c(b"123456789") != zlib.crc32(b"123456789")  # not the CRC-32 polynomial


def test_event_files_read_back_through_tensorflow_with_every_scalar_and_step(tmp_path, caplog):
    tf = pytest.importorskip("tensorflow")
    workdir = str(tmp_path)
    scalars = {10: {"train/loss": 2.5, "train/learning_rate": 1e-3}, 20: {"eval/accuracy": 0.9375}}
    with caplog.at_level(logging.INFO):
        log = metrics_log.MetricsLog(workdir)
        for step, values in scalars.items():
            log.write(step, values)
        log.close()
    assert "[20] eval/accuracy=0.9375" in caplog.text  # the log file's line

    [path] = glob.glob(os.path.join(workdir, "events.out.tfevents.*"))
    events = list(tf.compat.v1.train.summary_iterator(path))  # checks each record's two CRCs
    assert events[0].file_version == "brain.Event:2"
    read = {}
    for event in events[1:]:
        for value in event.summary.value:
            assert value.metadata.plugin_data.plugin_name == "scalars"
            read.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
    assert read == {step: {k: float(np.float32(v)) for k, v in values.items()} for step, values in scalars.items()}


def test_the_trainer_and_its_metrics_log_import_no_tensorflow(tmp_path):
    """TensorFlow costs seconds of start-up; only the TFDS data path may import it."""
    code = ("import sys; from tokenlearner_jax import main; from tokenlearner_jax.train import metrics_log, trainer; "
            f"log = metrics_log.MetricsLog({str(tmp_path)!r}); log.write(1, {{'train/loss': 1.0}}); log.close(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'tensorflow'))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert proc.stdout.strip() == "[]", proc.stdout[-2000:]
    assert glob.glob(os.path.join(str(tmp_path), "events.out.tfevents.*"))
