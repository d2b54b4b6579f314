"""Sweeps defined in config files: a sweep is a list of points, each a dict of config overrides.

A config file may define `get_sweep(arg)` beside `get_config(arg)`, built from these helpers:

    def get_sweep(arg=None):
        return sweeps.product(
            sweeps.axis("model.token_learner.num_tokens", [8, 16]),
            sweeps.axis("seed", [0, 1]))          # 4 points

Keys are config fields without the leading 'config.'. `python -m tokenlearner_jax.sweep` trains
every point in its own sub-directory named by `point_name`, through `main.py` and `to_flags`.
"""

import builtins
import importlib.util
import itertools
import os
import re

Point = dict  # {"model.token_learner.num_tokens": 8, "seed": 0}


def axis(key: str, values) -> list[Point]:
    """One point per value of one field."""
    return [{_field(key): value} for value in values]


def product(*sweeps: list[Point]) -> list[Point]:
    """Every combination of one point from each sweep (the first varies slowest), merged."""
    return [_merge(combination) for combination in itertools.product(*sweeps)]


def zip(*sweeps: list[Point]) -> list[Point]:  # noqa: A001  (sweeps.zip reads as intended)
    """The i-th points of all sweeps merged; the sweeps must have equal lengths."""
    lengths = {len(sweep) for sweep in sweeps}
    if len(lengths) > 1:
        raise ValueError(f"sweeps.zip needs sweeps of equal length, got lengths {[len(s) for s in sweeps]}")
    return [_merge(points) for points in builtins.zip(*sweeps)]


def _field(key: str) -> str:
    return key[len("config."):] if key.startswith("config.") else key


def _merge(points) -> Point:
    merged = {}
    for point in points:
        for key, value in point.items():
            key = _field(key)
            if key in merged and merged[key] != value:
                raise ValueError(f"sweep points disagree on {key}: {merged[key]!r} and {value!r}")
            merged[key] = value
    return merged


def format_value(value) -> str:
    """A value as main.py's `--config.KEY=VALUE` parses it back (ml_collections config flags)."""
    if isinstance(value, (tuple, list)):  # parsed with ast.literal_eval
        return repr(tuple(value))
    return str(value)


def to_flags(point: Point) -> list[str]:
    """['--config.model.token_learner.num_tokens=8', ...] for main.py."""
    return [f"--config.{_field(key)}={format_value(value)}" for key, value in point.items()]


def point_name(point: Point, sweep: list[Point]) -> str:
    """A directory name for `point`, e.g. 'location=0.25,num_tokens=8,seed=0': each field by its last
    component, or by its full dotted name where two fields of the sweep share that last component.
    Characters other than letters, digits and `._-=,+` become '_'; an empty point is 'default'."""
    keys = {_field(k) for p in [point, *sweep] for k in p}
    last = {}
    for key in keys:
        last.setdefault(key.rsplit(".", 1)[-1], set()).add(key)
    parts = []
    for key, value in point.items():
        key = _field(key)
        short = key.rsplit(".", 1)[-1]
        parts.append(f"{short if len(last[short]) == 1 else key}={format_value(value)}")
    return re.sub(r"[^A-Za-z0-9._\-=,+]", "_", ",".join(parts)) or "default"


def split_config_path(config: str) -> tuple[str, str | None]:
    """'configs/x.py:arg' -> ('configs/x.py', 'arg'); 'configs/x.py' -> ('configs/x.py', None)."""
    path, _, arg = config.partition(":")
    return path, (arg or None)


def load_module(path: str):
    """Imports a config file by path."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} not found")
    spec = importlib.util.spec_from_file_location(f"_sweep_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_sweep(config: str) -> list[Point]:
    """The points of `configs/x.py[:arg]`'s `get_sweep(arg)`, with 'config.' stripped from the keys."""
    path, arg = split_config_path(config)
    module = load_module(path)
    if not hasattr(module, "get_sweep"):
        raise ValueError(f"{path} defines no get_sweep(arg): nothing to sweep")
    points = [{_field(k): v for k, v in point.items()} for point in module.get_sweep(arg)]
    if not points:
        raise ValueError(f"{path}: get_sweep({arg!r}) returned no points")
    return points


def resolve(config: str, point: Point):
    """The ConfigDict that main.py would build for `point`: get_config(arg) with the overrides set. Each
    override is type-checked by ml_collections (a misspelt field or a wrong type raises here)."""
    path, arg = split_config_path(config)
    resolved = load_module(path).get_config(arg)
    for key, value in point.items():
        try:
            set_field(resolved, _field(key), tuple(value) if isinstance(value, list) else value)
        except KeyError:
            raise KeyError(f"sweep override {key!r}: config {config} has no field {_field(key)!r}") from None
    return resolved


def set_field(config, dotted: str, value) -> None:
    """Sets the field `dotted` ('optimizer.lr') of the ConfigDict `config`, type-checked by ml_collections;
    KeyError where it has no such field."""
    *parents, name = dotted.split(".")
    node = config
    for parent in parents:
        node = node[parent]
    if name not in node:
        raise KeyError(dotted)
    node[name] = value
