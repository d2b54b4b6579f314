"""The final metrics of every point of a sweep, as ROOT/results.csv and a markdown table ROOT/results.md.

One row per point: its name, its overrides, its status ('done', 'failed', 'interrupted', 'running',
'pending'), the final evaluation (the last metrics.jsonl record with eval/accuracy, and its step), the
model's size and XLA-counted GMACs (step 0), the last training loss, wall seconds and the error of a
failed point.
"""

import csv
import json
import math
import os

STATUS_FILE = "sweep_point.json"
MARKDOWN_METRICS = ("eval/accuracy", "eval/loss", "model/gmacs", "model/num_params")


def read_status(point_dir: str) -> dict:
    """The sweep's record of one point ({'status': 'pending'} before it first ran)."""
    path = os.path.join(point_dir, STATUS_FILE)
    if not os.path.exists(path):
        return {"status": "pending"}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write_status(point_dir: str, record: dict) -> None:
    tmp = os.path.join(point_dir, STATUS_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(point_dir, STATUS_FILE))


def final_metrics(workdir: str) -> dict:
    """{'step', 'eval/...', 'model/...', 'train/loss'} from a run's metrics.jsonl; {} when there is none."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    out = {}
    for record in records:
        if "eval/accuracy" in record:
            out.update({k: v for k, v in record.items() if k.startswith("eval/")}, step=record["step"])
        if "train/loss" in record:
            out["train/loss"] = record["train/loss"]
        out.update({k: v for k, v in record.items() if k.startswith("model/")})
    return out


def collect(root: str, points: list[dict], names: list[str]) -> list[dict]:
    """One row per point (see the module docstring)."""
    rows = []
    for point, name in zip(points, names):
        directory = os.path.join(root, name)
        status = read_status(directory)
        row = {"point": name, **point, "status": status["status"]}
        row.update(final_metrics(directory))
        row["seconds"] = round(status.get("seconds", 0.0), 1)
        row["error"] = status.get("error", "")
        rows.append(row)
    return rows


def _columns(rows: list[dict], points: list[dict]) -> list[str]:
    keys = list(dict.fromkeys(k for p in points for k in p))
    metrics = sorted({k for r in rows for k in r if "/" in k and k not in keys})
    return ["point", *keys, "status", "step", *metrics, "seconds", "error"]


def _format(column: str, value) -> str:
    if not isinstance(value, float) or math.isnan(value):
        return str(value)
    if column == "seconds" or value.is_integer():
        return f"{value:.0f}"
    return f"{value:.4g}" if abs(value) < 1e-3 else f"{value:.4f}"


def write_tables(root: str, rows: list[dict], points: list[dict]) -> None:
    """ROOT/results.csv (every column) and ROOT/results.md (overrides, status, step, MARKDOWN_METRICS)."""
    columns = _columns(rows, points)
    with open(os.path.join(root, "results.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    keys = list(dict.fromkeys(k for p in points for k in p))
    shown = ["point", *keys, "status", "step", *[m for m in MARKDOWN_METRICS if any(m in r for r in rows)],
             "seconds"]
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_format(c, row.get(c, "")) for c in shown) + " |")
    failed = [row for row in rows if row["status"] == "failed"]
    if failed:
        lines.append("")
        lines.extend(f"- {row['point']} failed: {row['error']}" for row in failed)
    with open(os.path.join(root, "results.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
