"""Metrics to TensorBoard (clu metric writers) and to `metrics.jsonl` in the workdir."""

import json
import os

import jax
from clu import metric_writers


class MetricsLog:
    """`write(step, {"eval/accuracy": 0.97, ...})` appends one JSON object per call to metrics.jsonl
    (process 0 only) and writes the same scalars through clu's default writer (TensorBoard + log)."""

    def __init__(self, workdir: str, *, resume_step: int = 0):
        """A resumed run (`resume_step` > 0) first drops records written after its checkpoint, and a run
        that starts from scratch drops every record of an earlier attempt, so the file ends as an
        uninterrupted run's would."""
        is_main = jax.process_index() == 0
        self.writer = metric_writers.create_default_writer(workdir, just_logging=not is_main)
        self.path = os.path.join(workdir, "metrics.jsonl") if is_main else None
        if self.path and os.path.exists(self.path):
            kept = [r for r in read_metrics(workdir) if r["step"] <= resume_step] if resume_step else []
            with open(self.path, "w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in kept)

    def write(self, step: int, scalars: dict):
        scalars = {name: float(value) for name, value in scalars.items()}
        self.writer.write_scalars(step, scalars)
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
        self.writer.flush()
        self.writer.close()


def read_metrics(workdir: str) -> list[dict]:
    """All records of a workdir's metrics.jsonl."""
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
