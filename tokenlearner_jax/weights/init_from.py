"""Start a run from a checkpoint: ours (an orbax workdir, or the output of `tokenlearner_jax.convert`),
a vit_jax / big_vision `.npz`, or a timm `.safetensors` file, reconciled with the model of the config.

`config.init_from` (see recipes.trainer_defaults):
  path: '' (train from scratch), a workdir or orbax checkpoint directory, a .npz or a .safetensors file.
  include: regexes on parameter names ('encoderblock_3/MlpBlock_3/Dense_0/kernel'); when non-empty,
    only the target parameters matching one are loaded, the others keep their fresh initialisation.
  exclude: regexes; matching target parameters keep their fresh initialisation and matching source
    parameters are ignored.
  fresh_if_missing: regexes of target parameters that may be absent from the source and are then
    initialised fresh (by default TokenLearner and TokenFuser, for inserting them into a plain ViT).
  reinit_if_shape_differs: regexes of target parameters re-initialised when the source's shape differs
    (by default the head, whose shape follows the number of classes).

Position embeddings (names ending in 'pos_embedding', `[1, length, width]`) are resampled to the
target's grid by 2D bilinear interpolation; a leading class-token row is kept as it is, dropped when
the target has no class token, or added as zeros when the source has none (the length tells which:
a square number of positions has no class-token row). Relative position bias tables (names ending in
'relative_position_bias/table', `[heads, 2w-1, 2w-1]`, MaxViT) are resized to the target's window by
2D bilinear interpolation (layers/relative_position.resize_table). A 2D patch kernel meeting a 3D tubelet
kernel (a 2D ViT into ViViT) is inflated over time by `config.init_from.inflate` (weights/inflate.py). Any
other difference is an error naming the parameter and both shapes; so is a source parameter with no
target, or a target parameter with no source, unless a pattern above covers it. Every decision is logged and written to
`<workdir>/init_from.json`. Npz and safetensors files are read through the backbone's weight map,
`weights/<config.model.name>.py`; nothing is unpickled.
"""

import dataclasses
import json
import logging
import math
import os
import re
import zipfile

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from tokenlearner_jax.layers import relative_position
from tokenlearner_jax.weights import inflate, ours
from tokenlearner_jax import weights

POSEMB_PATTERN = r"(^|/)pos_embedding$"


@dataclasses.dataclass
class Report:
    """What happened to every parameter. Names are 'collection/name' except in 'params'."""

    source: str
    loaded: list = dataclasses.field(default_factory=list)  # copied unchanged
    adapted: list = dataclasses.field(default_factory=list)  # "name: what was done"
    fresh: list = dataclasses.field(default_factory=list)  # "name: why", left at the initial value
    ignored: list = dataclasses.field(default_factory=list)  # source parameters skipped by a pattern

    def log(self):
        logging.info("init_from %s: %d parameters loaded unchanged, %d adapted, %d initialised fresh, "
                     "%d source parameters ignored.", self.source, len(self.loaded), len(self.adapted),
                     len(self.fresh), len(self.ignored))
        for kind in ("adapted", "fresh", "ignored"):
            for line in getattr(self, kind):
                logging.info("init_from %s: %s", kind, line)

    def write(self, path: str):
        with open(path, "w", encoding="utf-8") as f:
            json.dump(dataclasses.asdict(self), f, indent=1)


def _display(key) -> str:
    collection, name = key
    return name if collection == "params" else f"{collection}/{name}"


def flatten(variables: dict) -> dict:
    """{collection: nested dict} -> {(collection, 'a/b/c'): leaf}."""
    flat = {}
    for collection, tree in variables.items():
        for path, leaf in flax.traverse_util.flatten_dict(flax.core.unfreeze(tree), sep="/").items():
            flat[(collection, path)] = leaf
    return flat


def unflatten(flat: dict) -> dict:
    """Inverse of `flatten`."""
    out = {}
    for (collection, path), leaf in flat.items():
        out.setdefault(collection, {})[path] = leaf
    return {collection: flax.traverse_util.unflatten_dict(tree, sep="/") for collection, tree in out.items()}


# ---------------------------------------------------------------------------------------------- sources

def checkpoint_directory(path: str) -> epath.Path:
    """A workdir's `checkpoints/` folder, or `path` itself when it holds the step folders."""
    path = epath.Path(path if "://" in path else os.path.abspath(path))  # orbax wants absolute paths
    return path / "checkpoints" if (path / "checkpoints").is_dir() else path


def restore_variables(path: str, abstract_variables: dict | None = None):
    """Parameters and other variable collections of the latest checkpoint under `path`.

    Only `params` and `model_state` of the saved TrainState are read (never the optimizer state).
    With `abstract_variables` ({collection: tree of ShapeDtypeStruct with shardings}) they are restored
    as sharded jax arrays; without, as NumPy arrays of the saved shapes. Returns (variables, step)."""
    directory = checkpoint_directory(path)
    with ocp.CheckpointManager(directory, item_names=("state",),
                               item_handlers={"state": ocp.PyTreeCheckpointHandler()}) as manager:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        if abstract_variables is None:
            saved = manager.item_metadata(step)["state"].tree
            item = {"params": saved["params"], "model_state": saved.get("model_state") or {}}
            restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
        else:
            item = {"params": abstract_variables["params"],
                    "model_state": {k: v for k, v in abstract_variables.items() if k != "params"}}
            restore_args = ocp.checkpoint_utils.construct_restore_args(item)
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=restore_args, partial_restore=True)))["state"]
    return {"params": restored["params"], **(restored.get("model_state") or {})}, step


def source_gelu(path: str):
    """The GELU a published checkpoint was trained with: 'tanh' for a vit_jax / big_vision .npz (Flax's
    nn.gelu default), 'erf' for a timm .safetensors (torch's exact GELU); None for our own checkpoints and
    layout, which carry their config."""
    location = epath.Path(path)
    if location.is_dir() or not location.exists():
        return None
    if location.suffix == ".npz":
        return "tanh"
    if location.suffix == ".safetensors" and not ours.is_ours(location.read_bytes()):
        return "erf"
    return None


def check_gelu(model_config, path: str) -> None:
    """Warns when the model's GELU is not the one the source was trained with (the loaded network would
    compute a slightly different function)."""
    wanted = source_gelu(path)
    if wanted and "gelu" in model_config and model_config.gelu != wanted:
        logging.warning("config.init_from.path=%s was trained with the %s GELU, but config.model.gelu=%r: set "
                        "--config.model.gelu=%s to compute the function the weights were trained as.", path,
                        wanted, model_config.gelu, wanted)


def load_source(path: str, model_config) -> dict:
    """{collection: nested dict of NumPy arrays} from a checkpoint directory, .npz or .safetensors."""
    location = epath.Path(path)
    if location.is_dir():
        variables, step = restore_variables(path)
        logging.info("init_from: read step %d of %s", step, checkpoint_directory(path))
        return variables
    if not location.exists():
        raise FileNotFoundError(f"config.init_from.path={path!r}: no such file or directory")
    suffix = location.suffix
    if suffix == ".npz":
        try:
            with location.open("rb") as f, np.load(f, allow_pickle=False) as archive:
                arrays = {name: archive[name] for name in archive.files}
        except (EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
            raise ValueError(f"config.init_from.path={path!r}: not a readable .npz archive ({e})") from e
        return weights.converter(model_config.name, "npz")(arrays, model_config)
    if suffix == ".safetensors":
        import safetensors.numpy  # pylint: disable=g-import-not-at-top

        raw = location.read_bytes()
        if ours.is_ours(raw):  # our own layout (weights/ours.py), written by tokenlearner_jax.export
            return ours.load(raw)
        return weights.converter(model_config.name, "safetensors")(safetensors.numpy.load(raw), model_config)
    raise ValueError(f"config.init_from.path={path!r}: expected a checkpoint directory, a .npz or a "
                     f".safetensors file")


# ---------------------------------------------------------------------------------------------- reconcile

def _square_side(length: int, name: str, shape) -> tuple:
    """(number of leading prefix rows, grid side) for a position-embedding length."""
    for prefix in (0, 1):
        side = math.isqrt(length - prefix)
        if side * side == length - prefix:
            return prefix, side
    raise ValueError(f"{name}: cannot read a square grid from {length} positions (shape {list(shape)})")


def resample_posemb(posemb: np.ndarray, target_shape, name: str = "pos_embedding"):
    """`[1, length, width]` -> `target_shape`: the grid resampled by bilinear interpolation, a class-token
    row kept, dropped or added as zeros. Returns (array, description)."""
    posemb = np.asarray(posemb, np.float32)
    if posemb.ndim != 3 or len(target_shape) != 3 or posemb.shape[::2] != tuple(target_shape)[::2]:
        raise ValueError(f"{name}: source shape {list(posemb.shape)} cannot be resampled to target shape "
                         f"{list(target_shape)} (expected [1, length, width] with the same width)")
    source_prefix, source_side = _square_side(posemb.shape[1], name, posemb.shape)
    target_prefix, target_side = _square_side(target_shape[1], name, target_shape)
    width = posemb.shape[2]
    prefix, grid = posemb[:, :source_prefix], posemb[0, source_prefix:].reshape(source_side, source_side, width)
    notes = []
    if source_side != target_side:
        grid = np.asarray(jax.image.resize(grid, (target_side, target_side, width), method="bilinear"))
        notes.append(f"grid {source_side}x{source_side} -> {target_side}x{target_side} (bilinear)")
    if source_prefix > target_prefix:
        prefix = prefix[:, :0]
        notes.append("class-token row dropped (no class token here)")
    elif source_prefix < target_prefix:
        prefix = np.zeros((1, 1, width), np.float32)
        notes.append("class-token row added as zeros (none in the source)")
    out = np.concatenate([prefix, grid.reshape(1, target_side * target_side, width)], axis=1)
    return out, f"{name}: {list(posemb.shape)} -> {list(out.shape)}: " + ", ".join(notes)


def validate(init_config) -> None:
    """Checks `config.init_from` before anything is loaded: regexes that compile, a known inflation."""
    for field in ("include", "exclude", "fresh_if_missing", "reinit_if_shape_differs"):
        _matcher(init_config[field], field)
    if init_config.inflate not in inflate.METHODS:
        raise ValueError(f"config.init_from.inflate={init_config.inflate!r}: expected one of {inflate.METHODS}")
    path = init_config.path
    if path and os.path.isfile(path) and os.path.getsize(path) == 0:  # a missing one: load_source says so
        raise ValueError(f"config.init_from.path={path!r}: the file is empty; expected a checkpoint "
                         f"directory, an .npz or a .safetensors file")


def _matcher(patterns, field: str):
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as e:
            raise ValueError(f"config.init_from.{field}: bad regex {pattern!r}: {e}") from e
    return lambda name: any(p.search(name) for p in compiled)


def reconcile(source: dict, target: dict, init_config, *, source_name: str = ""):
    """Matches source variables to the target's.

    Args:
      source: {collection: nested dict of arrays}.
      target: {collection: nested dict of anything with `.shape` and `.dtype`} (e.g. ShapeDtypeStructs).
      init_config: the `config.init_from` section (patterns).

    Returns:
      ({(collection, name): NumPy array of the target's shape and dtype} for every parameter taken from
      the source, Report). Parameters absent from the dict keep their initial value.

    Raises:
      ValueError listing every parameter that cannot be reconciled.
    """
    included = _matcher(init_config.include, "include")
    excluded = _matcher(init_config.exclude, "exclude")
    may_be_missing = _matcher(init_config.fresh_if_missing, "fresh_if_missing")
    may_reinit = _matcher(init_config.reinit_if_shape_differs, "reinit_if_shape_differs")
    is_posemb = _matcher((POSEMB_PATTERN,), "posemb")
    is_bias_table = _matcher((relative_position.TABLE_PATTERN,), "relative bias table")
    source, target = flatten(source), flatten(target)
    report = Report(source=source_name)
    values, missing, mismatched = {}, [], []
    for key, spec in target.items():
        name, shown, shape = key[1], _display(key), tuple(spec.shape)
        skip = "excluded by config.init_from.exclude" if excluded(name) else (
            "not matched by config.init_from.include" if init_config.include and not included(name) else "")
        if skip:
            report.fresh.append(f"{shown}: {skip}")
            if key in source:
                report.ignored.append(f"{shown} {list(np.shape(source[key]))}")
            continue
        if key not in source:
            if may_be_missing(name):
                report.fresh.append(f"{shown}: absent from the source")
            else:
                missing.append(f"{shown} {list(shape)}")
            continue
        value = np.asarray(source[key])
        if value.shape == shape:
            report.loaded.append(shown)
        elif is_posemb(name):
            value, note = resample_posemb(value, shape, shown)
            report.adapted.append(note)
        elif is_bias_table(name) and value.ndim == 3 and value.shape[0] == shape[0] and shape[1] == shape[2]:
            value = relative_position.resize_table(value, (shape[1] + 1) // 2)
            report.adapted.append(f"{shown}: {list(np.shape(source[key]))} -> {list(shape)} (bilinear)")
        elif name.endswith("kernel") and inflate.can_inflate(value.shape, shape):
            method = init_config.get("inflate", "central_frame")
            value = inflate.inflate_kernel(value, shape[0], method)
            report.adapted.append(f"{shown}: {list(np.shape(source[key]))} -> {list(shape)} ({method} inflation)")
        elif may_reinit(name):
            report.fresh.append(f"{shown}: re-initialised, shape {list(value.shape)} in the source, "
                                f"{list(shape)} here")
            continue
        else:
            mismatched.append(f"{shown}: source shape {list(value.shape)}, target shape {list(shape)}")
            continue
        values[key] = value.astype(spec.dtype)
    unused = []
    for key, value in source.items():
        if key in target:
            continue
        if excluded(key[1]) or (init_config.include and not included(key[1])):
            report.ignored.append(f"{_display(key)} {list(np.shape(value))}")
        else:
            unused.append(f"{_display(key)} {list(np.shape(value))}")
    problems = []
    if mismatched:
        problems.append("shapes that cannot be reconciled:\n  " + "\n  ".join(mismatched))
    if missing:
        problems.append("target parameters absent from the source (list them in config.init_from."
                        "fresh_if_missing to initialise them fresh):\n  " + "\n  ".join(missing))
    if unused:
        problems.append("source parameters with no counterpart in the target model (a different "
                        "config.model, e.g. classifier or representation_size? list them in "
                        "config.init_from.exclude to skip them):\n  " + "\n  ".join(unused))
    if problems:
        raise ValueError(f"config.init_from {source_name}: " + "\n".join(problems))
    return values, report


# ---------------------------------------------------------------------------------------------- apply

def _place(value: np.ndarray, like: jax.Array) -> jax.Array:
    """A global array with `like`'s sharding from a NumPy array every process holds in full."""
    return jax.make_array_from_callback(value.shape, like.sharding, lambda index: value[index])


def initialize(state, init_config, model_config, *, report_dir: str | None = None):
    """`state` (a freshly initialised TrainState) with its params and model_state taken from
    `init_config.path` as far as `reconcile` allows. The optimizer state is kept: our optimizers'
    initial state (zero moments, zero step count) does not depend on the parameter values."""
    check_gelu(model_config, init_config.path)
    source = load_source(init_config.path, model_config)
    variables = {"params": state.params, **state.model_state}
    values, report = reconcile(source, variables, init_config, source_name=init_config.path)
    report.log()
    if report_dir is not None and jax.process_index() == 0:
        report.write(os.path.join(report_dir, "init_from.json"))
    flat = flatten(variables)
    merged = unflatten({key: _place(values[key], leaf) if key in values else leaf
                        for key, leaf in flat.items()})
    params = merged.pop("params")
    model_state = {name: merged.get(name, {}) for name in state.model_state}
    return state.replace(params=params, model_state=model_state)
