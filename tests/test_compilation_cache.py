"""main.py --compilation_cache_dir: a second run of the same model loads its compiled programs from the
cache instead of compiling them, with the same results; '' turns the cache off."""

import json
import os

from helpers import main_py

STEPS = ["--config.num_train_steps=4"]
EVERY_PROGRAM = {"JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}  # not only those that took 1 s


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if "per_sec" not in k} for r in records]


def test_a_second_run_takes_every_program_from_the_cache_and_gets_the_same_metrics(tmp_path):
    cache = tmp_path / "cache"
    main_py(tmp_path / "first", *STEPS, f"--compilation_cache_dir={cache}", env=EVERY_PROGRAM)
    entries = sorted(os.listdir(cache))
    assert any("train_step" in name for name in entries), entries

    main_py(tmp_path / "second", *STEPS, f"--compilation_cache_dir={cache}", env=EVERY_PROGRAM)
    assert sorted(os.listdir(cache)) == entries  # nothing compiled anew that the cache keeps
    main_py(tmp_path / "off", *STEPS, "--compilation_cache_dir=", env=EVERY_PROGRAM)
    assert sorted(os.listdir(cache)) == entries

    first = _metrics(tmp_path / "first")
    assert any("train/loss" in r for r in first)
    assert _metrics(tmp_path / "second") == first
    assert _metrics(tmp_path / "off") == first
