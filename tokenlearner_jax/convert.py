"""Converts a published checkpoint into an orbax checkpoint of the model of a config, offline.

  python -m tokenlearner_jax.convert --source=model.safetensors --config=configs/vit_b16.py --output=DIR \
      [--config.model.classifier=token ...]

The source is a timm .safetensors file, a vit_jax / big_vision .npz (read through
`weights/<config.model.name>.py`) or one of our checkpoint directories. The result is reconciled
with the model of the config exactly as `config.init_from` does at the start of a run (position
embeddings resampled to config.dataset.image_size, patterns of config.init_from), and strictly: every
source parameter must be used and every target parameter filled, except those config.init_from lists
(fresh_if_missing, exclude, reinit_if_shape_differs), which keep their initial values and are reported.
Anything else stops the conversion with the list of offending parameters and nothing written.

Writes DIR/checkpoints/0/ (a `{'params', 'model_state'}` tree), DIR/conversion.json (what happened to
every parameter) and DIR/config.json. DIR is accepted by `--config.init_from.path=DIR` and by
`main.py --mode=fewshot --workdir=DIR`.
"""

import json
import os

import flax
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from absl import app, flags, logging
from ml_collections import config_flags

from tokenlearner_jax import data, models
from tokenlearner_jax.train import trainer
from tokenlearner_jax.weights import init_from

FLAGS = flags.FLAGS


def initial_variables(config) -> dict:
    """{'params': ..., other collections}: the model's initial values (NumPy-convertible jax arrays)."""
    model = models.build(config.model)
    shape = data.example_shape(config.dataset)

    def init(rng):
        variables = model.init({"params": rng}, jnp.zeros((1,) + shape, jnp.float32), train=False)
        variables = dict(flax.core.meta.unbox(variables))
        variables.pop("intermediates", None)
        return variables

    return jax.jit(init)(jax.random.key(config.seed))


def convert(config, source: str, output: str) -> init_from.Report:
    """Reads `source`, reconciles it with `config.model` and writes the checkpoint to `output`."""
    gelu = init_from.source_gelu(source)
    if gelu and "gelu" in config.model and config.model.gelu != gelu:
        logging.info("convert: %s was trained with the %s GELU; config.model.gelu set to %r.", source, gelu, gelu)
        config.model.gelu = gelu
    trainer.validate(config)
    directory = os.path.join(os.path.abspath(output), "checkpoints")
    if os.path.exists(directory) and os.listdir(directory):
        raise FileExistsError(f"--output={output}: {directory} already holds a checkpoint")
    loaded = init_from.load_source(source, config.model)
    variables = initial_variables(config)
    values, report = init_from.reconcile(loaded, variables, config.init_from, source_name=source)
    flat = init_from.flatten(variables)
    flat.update(values)
    merged = init_from.unflatten(flat)
    state = {"params": merged.pop("params"),
             "model_state": {c: merged.get(c, {}) for c in variables if c != "params"}}
    with ocp.CheckpointManager(directory, item_names=("state",)) as manager:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state)))
        manager.wait_until_finished()
    report.write(os.path.join(output, "conversion.json"))
    with open(os.path.join(output, "config.json"), "w", encoding="utf-8") as f:
        f.write(config.to_json_best_effort(indent=2, sort_keys=True))
    return report


def main(argv):
    del argv
    report = convert(FLAGS.config, FLAGS.source, FLAGS.output)
    report.log()
    summary = (f"converted {FLAGS.source} -> {FLAGS.output}: {len(report.loaded)} parameters copied, "
               f"{len(report.adapted)} adapted, {len(report.fresh)} initialised fresh, "
               f"{len(report.ignored)} source parameters ignored")
    logging.info(summary)
    print(summary)
    print(json.dumps({"adapted": report.adapted, "fresh": report.fresh, "ignored": report.ignored}, indent=1))


def define_flags():
    """Command-line flags, defined only when this module runs as a program (so that importing it
    beside other tools does not define the same flag names twice)."""
    config_flags.DEFINE_config_file("config", None, "The config whose model the checkpoint is converted to.",
                                    lock_config=True)
    flags.DEFINE_string("source", None, "A .safetensors or .npz file, or a checkpoint directory of ours.")
    flags.DEFINE_string("output", None, "Directory to write; must not hold a checkpoint yet.")
    flags.mark_flags_as_required(["config", "source", "output"])


def run():
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
