"""Writes a checkpoint of ours for other code bases: timm (PyTorch), vit_jax, or our own safetensors layout.

  python -m tokenlearner_jax.export --workdir=W --format=timm --output=model.safetensors
  python -m tokenlearner_jax.export --workdir=W --format=vit_jax --output=model.npz
  python -m tokenlearner_jax.export --workdir=W --format=ours --output=model.safetensors

W is a training workdir, the output of `tokenlearner_jax.convert`, or a checkpoint directory; its latest
checkpoint is exported with the model of W/config.json (or --config=configs/X.py with the run's
overrides; a checkpoint directory named `checkpoints` finds the config.json beside it).

- timm: a timm state dict (safetensors) for ViT, PoolFormer, NesT and MaxViT, written by the inverse of
  the import map `weights/<config.model.name>.py` (transposed kernels, fused qkv, BatchNorm running
  statistics, relative position tables, position embeddings in timm's layout). The command prints the
  Python that loads it: for a timm variant (and any ViT or MaxViT, whose timm entry points take the
  architecture as keyword arguments)
      timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=..., num_classes=N, ...), ...)
  and for a PoolFormer or NesT of another size, timm's model class with the architecture's arguments
  and `load_state_dict`. The code is also stored in the file's metadata under 'timm_code'.
- vit_jax: a ViT as a vit_jax .npz (the layout of the published checkpoints, which timm also reads).
- ours: any model (TokenLearner, TokenFuser, ViViT...) in our own layout (weights/ours.py), which
  `config.init_from.path`, `tokenlearner_jax.convert` and `predict` read back.

Before writing, the result is imported back through the import map and compared with the checkpoint:
every parameter and statistic must come back identical, so nothing is written for a model that the
format cannot hold (e.g. TokenLearner in timm's ViT: the error names the field, use --format=ours).
docs/export.md describes the layouts.
"""

import os
import sys

import numpy as np
from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
FORMATS = {"timm": ".safetensors", "vit_jax": ".npz", "ours": ".safetensors"}
# config.dataset.normalize -> timm's (mean, std) of inputs in [0, 1]
_NORMALIZATION = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
                  "minus_one_one": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
                  "unit": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))}


def _check_round_trip(variables: dict, tensors: dict, fmt: str, model_config) -> None:
    """Imports `tensors` back through the import map; every variable of `variables` must come back
    identical. ValueError naming those the format has no place for (nothing to export them to)."""
    from tokenlearner_jax import weights
    from tokenlearner_jax.weights import ours

    source_format = "npz" if fmt == "vit_jax" else "safetensors"
    back = ours.to_tensors(weights.converter(model_config.name, source_format)(tensors, model_config))
    original = ours.to_tensors(variables)
    missing = sorted(set(original) - set(back))
    if missing:
        raise ValueError(f"--format={fmt} has no place for {len(missing)} variables of this "
                         f"{model_config.name} model ({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); "
                         f"export with --format=ours")
    different = [name for name, value in original.items()
                 if back[name].shape != value.shape or not np.array_equal(back[name], value)]
    if different or set(back) - set(original):
        raise RuntimeError(f"export to {fmt} is not the inverse of the import map for {different[:5]} "
                           f"{sorted(set(back) - set(original))[:5]} (a bug in weights/{model_config.name}.py)")


def _python_call(builder: str, kwargs: dict) -> str:
    """Python source of the call `builder(**kwargs)`, dict values written as dict(...) calls."""
    def source(value):
        return _python_call("dict", value) if isinstance(value, dict) else repr(value)

    return f"{builder}({', '.join(f'{k}={source(v)}' for k, v in kwargs.items())})"


def timm_code(model_config, dataset_config, path: str, fmt: str = "timm") -> str:
    """Python that builds timm's counterpart of the model and loads the file `path` into it (`model`)."""
    from tokenlearner_jax import weights

    builder, kwargs = weights.for_model(model_config.name).timm_model(model_config, dataset_config.image_size)
    if "." in builder:  # a model class: the registered entry points cannot build this architecture
        return (f"import safetensors.torch, timm, torch\nmodel = {_python_call(builder, kwargs)}\n"
                f"model.load_state_dict(safetensors.torch.load_file({path!r}))\nmodel.eval()")
    mean, std = _NORMALIZATION[dataset_config.normalize]
    size = dataset_config.image_size
    overlay = dict(file=path, num_classes=model_config.num_classes, input_size=(3, size, size), mean=mean, std=std)
    if fmt == "vit_jax":
        overlay["custom_load"] = True  # timm's own reader of vit_jax .npz files
    arguments = dict(pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    return f"import timm\nmodel = {_python_call('timm.create_model', dict(model_name=builder, **arguments))}.eval()"


def export_variables(variables: dict, config, fmt: str, *, step: int = 0, path: str = "") -> tuple:
    """`variables` ({collection: nested dict of arrays}) of the model of `config` -> (tensors {name: NumPy
    array}, metadata {str: str}) in format `fmt` ('timm', 'vit_jax' or 'ours'); `path` (where the file
    will be written) goes into the timm loading code. Raises ValueError when the format cannot hold the
    model (naming the field) or `fmt` is unknown."""
    from tokenlearner_jax import weights
    from tokenlearner_jax.weights import ours

    config_json = config.to_json_best_effort(sort_keys=True)
    if fmt == "ours":
        return ours.to_tensors(variables), ours.metadata(config_json, step)
    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt!r}: expected one of {sorted(FORMATS)}")
    module = weights.for_model(config.model.name)
    function = getattr(module, "to_npz" if fmt == "vit_jax" else "to_safetensors", None)
    if function is None:
        formats = ["ours"] + (["timm"] if hasattr(module, "to_safetensors") else []) + (
            ["vit_jax"] if hasattr(module, "to_npz") else [])
        raise ValueError(f"--format={fmt}: model {config.model.name!r} cannot be written in that layout; "
                         f"available: {', '.join(formats)}")
    numpy_variables = ours.from_tensors(ours.to_tensors(variables))
    tensors = {name: np.asarray(value, order="C")  # (np.ascontiguousarray would make 0-d arrays 1-d)
               for name, value in function(numpy_variables, config.model).items()}
    _check_round_trip(numpy_variables, tensors, fmt, config.model)
    metadata = {"format": "pt", "producer": "tokenlearner_jax.export", "step": str(step), "config": config_json}
    if fmt == "timm":
        metadata["timm_code"] = timm_code(config.model, config.dataset, path)
    return tensors, metadata


def write(path: str, tensors: dict, metadata: dict, fmt: str) -> None:
    """Writes a .safetensors file (with `metadata`) or, for vit_jax, an uncompressed .npz."""
    if fmt == "vit_jax":
        with open(path, "wb") as f:
            np.savez(f, **tensors)
        return
    import safetensors.numpy  # pylint: disable=g-import-not-at-top

    safetensors.numpy.save_file(tensors, path, metadata=metadata)


def run_config(workdir: str, config=None):
    """The config of the run in `workdir` (its config.json, or that of the folder above a `checkpoints`
    directory) unless `config` is given."""
    if config is not None:
        return config
    from tokenlearner_jax import visualize

    folder = os.path.abspath(workdir)
    if not os.path.exists(os.path.join(folder, "config.json")) and os.path.basename(folder) == "checkpoints":
        folder = os.path.dirname(folder)
    return visualize.config_from_workdir(folder)


def export(workdir: str, fmt: str, output: str, config=None) -> dict:
    """Exports the latest checkpoint of `workdir` to `output`; returns dict(step, tensors, code)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format={fmt!r}: expected one of {sorted(FORMATS)}")
    if not output.endswith(FORMATS[fmt]):
        raise ValueError(f"--output={output}: --format={fmt} writes a {FORMATS[fmt]} file")
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir}: no such directory")
    config = run_config(workdir, config)
    from tokenlearner_jax.weights import init_from

    variables, step = init_from.restore_variables(workdir)
    path = os.path.abspath(output)
    tensors, metadata = export_variables(variables, config, fmt, step=step, path=path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write(path, tensors, metadata, fmt)
    code = metadata.get("timm_code") or (timm_code(config.model, config.dataset, path, fmt)
                                         if fmt == "vit_jax" else "")
    return dict(step=step, tensors=len(tensors), code=code)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS["verbosity"].present:  # library chatter (orbax, XLA) only on request: --verbosity=0
        logging.set_verbosity(logging.ERROR)
    try:
        result = export(FLAGS.workdir, FLAGS.format, FLAGS.output, FLAGS.config)
    except (ValueError, FileNotFoundError) as e:
        sys.exit(f"export: {e}")
    print(f"wrote {FLAGS.output}: {result['tensors']} tensors ({FLAGS.format} layout), step {result['step']} of "
          f"{FLAGS.workdir}")
    if result["code"]:
        print("Load it in PyTorch with:\n" + result["code"])


def define_flags():
    """Command-line flags, defined only when this module runs as a program."""
    config_flags.DEFINE_config_file("config", None, "configs/X.py[:arg]; default: the workdir's config.json.")
    flags.DEFINE_string("workdir", None, "A training workdir, a converted checkpoint or a checkpoint directory.")
    flags.DEFINE_enum("format", "timm", sorted(FORMATS), "timm (safetensors), vit_jax (.npz, ViT) or ours "
                      "(safetensors, any model).")
    flags.DEFINE_string("output", None, "The file to write (.safetensors, or .npz for vit_jax).")
    flags.mark_flags_as_required(["workdir", "output"])


def run_command():
    """The console script's entry point."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run_command()
