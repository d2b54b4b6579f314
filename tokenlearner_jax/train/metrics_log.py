"""Metrics to TensorBoard, to the log file and to `metrics.jsonl` in the workdir, and the window of
training metrics between two log lines.

How the loop calls it:
  log = MetricsLog(workdir, resume_step=restored.step if restored else 0)   # after the restore
  window = TrainWindow.from_json(restored.extra.get("train_window")) if restored else TrainWindow()
  every step:     window.add(step, metrics)                  # device scalars are fine
  at a log step:  log.write(step, {**window.summary(sums=("train/skipped",)), "train/steps_per_sec": ...})
                  window.clear()
  at a save:      ckpt.save(..., extra={"train_window": window.to_json()})   # non-empty only off log steps
  at the end:     log.close()
Carrying the window through the checkpoint is what makes a run stopped between two log steps (SIGTERM)
write, after its resume, the same metrics.jsonl as an uninterrupted run.

metrics.jsonl is never truncated in place: a resumed run rewrites the kept records to a temporary
file that replaces metrics.jsonl in one rename, and the records it drops (past the restored step,
which the resumed run writes again) are appended to metrics_dropped.jsonl rather than lost.
"""

import json
import logging
import os

import jax
import numpy as np

from tokenlearner_jax.train import tensorboard_events
from tokenlearner_jax.train.workdir import write_atomically

METRICS_FILE = "metrics.jsonl"
DROPPED_FILE = "metrics_dropped.jsonl"


class MetricsLog:
    """`write(step, {"eval/accuracy": 0.97, ...})` appends one JSON object per call to metrics.jsonl and
    one event to a TensorBoard event file (both process 0 only), and logs the scalars (every process)."""

    def __init__(self, workdir: str, *, resume_step: int = 0):
        """Keeps the records of steps <= `resume_step` of an earlier attempt (none when starting from
        scratch, `resume_step` = 0), so the file ends as an uninterrupted run's would."""
        is_main = jax.process_index() == 0
        self.events = tensorboard_events.EventFileWriter(workdir) if is_main else None
        self.path = os.path.join(workdir, METRICS_FILE) if is_main else None
        if self.path and os.path.exists(self.path):
            _keep_records_up_to(workdir, resume_step)

    def write(self, step: int, scalars: dict):
        scalars = {name: float(value) for name, value in scalars.items()}
        logging.info("[%d] %s", step, ", ".join(f"{name}={value:.6g}" for name, value in sorted(scalars.items())))
        if self.events:
            self.events.write_scalars(step, scalars)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"step": int(step), **scalars}) + "\n")

    def has(self, step: int, prefix: str) -> bool:
        """Whether a record of `step` holds a metric whose name starts with `prefix` (process 0; other
        processes answer False)."""
        if not self.path or not os.path.exists(self.path):
            return False
        return any(r["step"] == step and any(name.startswith(prefix) for name in r)
                   for r in read_metrics(os.path.dirname(self.path)))

    def close(self):
        if self.events:
            self.events.close()


def _keep_records_up_to(workdir: str, step: int):
    """metrics.jsonl without the records past `step` (all records when `step` is 0), replaced in one
    rename; dropped lines, and a line cut short by a kill, go to metrics_dropped.jsonl."""
    path = os.path.join(workdir, METRICS_FILE)
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept, dropped = [], []
    for line in lines:
        record = _parse(line)
        if record is not None and 0 < step and record["step"] <= step:
            kept.append(line)
        elif line.strip():
            dropped.append(line if line.endswith("\n") else line + "\n")
    if not dropped:
        return
    with open(os.path.join(workdir, DROPPED_FILE), "a", encoding="utf-8") as f:
        f.writelines(dropped)
    write_atomically(path, "".join(kept))
    logging.info("metrics.jsonl: kept %d records up to step %d; %d later ones moved to %s.", len(kept), step,
                 len(dropped), DROPPED_FILE)


def _parse(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("step"), int) else None


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl (a last line cut short by a kill is skipped)."""
    with open(os.path.join(workdir, METRICS_FILE), encoding="utf-8") as f:
        return [record for record in map(_parse, f) if record is not None]


class TrainWindow:
    """Per-step training metrics since the last log line: `add` every step, `summary` at a log step.

    Attributes:
      steps: [(step, {name: scalar})] in step order.
    """

    def __init__(self, steps=()):
        self.steps = list(steps)

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: int, metrics: dict):
        self.steps.append((int(step), metrics))

    def clear(self):
        self.steps = []

    def summary(self, sums=()) -> dict:
        """{name: mean over the window}, or the sum for the names in `sums` (e.g. skipped steps);
        {} for an empty window."""
        if not self.steps:
            return {}
        names = self.steps[0][1].keys()
        values = {name: [float(metrics[name]) for _, metrics in self.steps] for name in names}
        return {name: float(np.sum(v)) if name in sums else float(np.mean(v)) for name, v in values.items()}

    def to_json(self) -> list:
        """[[step, {name: float}], ...] for a checkpoint's `extra`."""
        return [[step, {name: float(value) for name, value in metrics.items()}] for step, metrics in self.steps]

    @classmethod
    def from_json(cls, data) -> "TrainWindow":
        return cls((int(step), dict(metrics)) for step, metrics in (data or ()))
