"""Compares two metrics.jsonl files record by record, ignoring the wall-clock rates.

  python experiments/compare_metrics.py experiments/results/quickstart_metrics_before_refactor.jsonl \
      runs/quickstart/metrics.jsonl

Prints every record that differs (the same steps in the same order, the same metric names and bit-equal
values: the float64 numbers JSON holds, compared with ==) and exits 1 if any does; `train/steps_per_sec`
and `train/examples_per_sec` measure the machine, not the run, and are left out.
"""

import json
import sys

TIMING = ("train/steps_per_sec", "train/examples_per_sec")


def records(path):
    with open(path, encoding="utf-8") as f:
        return [{k: v for k, v in json.loads(line).items() if k not in TIMING} for line in f if line.strip()]


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    first, second = records(argv[1]), records(argv[2])
    differences = [(i, a, b) for i, (a, b) in enumerate(zip(first, second)) if a != b]
    for i, a, b in differences:
        print(f"record {i}:\n  {a}\n  {b}")
    if len(first) != len(second):
        print(f"{len(first)} records against {len(second)}")
    same = not differences and len(first) == len(second)
    print(f"{'identical' if same else 'DIFFERENT'}: {len(first)} records, every value compared except {TIMING}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
