"""Train or evaluate a config: `python main.py --config=configs/quickstart.py --workdir=runs/quickstart`
(the repository's main.py runs this; installed as the console script `tokenlearner-train`).

Any config field can be overridden, e.g. `--config.model.token_learner.num_tokens=16`. For several
processes, pass --coordinator_address/--num_processes/--process_id, or launch under SLURM or on a
TPU pod slice, where they are read from the environment.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from tokenlearner_jax.train import distributed, preemption

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "fewshot"],
                  "train (resumes automatically), eval or fewshot (both on the latest checkpoint).")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a multi-process run.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.DEFINE_integer("heartbeat_timeout_seconds", 120,
                     "A multi-process run stops this long after a process stops answering, naming it.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS
EXIT_LOST_PROCESS = 76  # another process of a multi-process run died


def main(argv):
    del argv
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
    from tokenlearner_jax.train import trainer  # after jax.distributed, which must come before any device use

    if FLAGS.mode == "train":
        try:
            _, metrics = trainer.run(FLAGS.config, FLAGS.workdir)
        except preemption.Preempted as stop:
            print(f"tokenlearner_jax: {stop}", file=sys.stderr, flush=True)
            sys.exit(preemption.EXIT_PREEMPTED)
        except jax.errors.JaxRuntimeError as error:
            if jax.process_count() == 1:
                raise
            print(f"tokenlearner_jax: process {jax.process_index()} of {jax.process_count()}: a collective failed "
                  f"({str(error).splitlines()[0][:300]}); another process has probably died. jax.distributed names "
                  f"it when its heartbeat times out (--heartbeat_timeout_seconds={FLAGS.heartbeat_timeout_seconds}). "
                  f"Restart all processes to resume from the last checkpoint.", file=sys.stderr, flush=True)
            sys.exit(EXIT_LOST_PROCESS)
    elif FLAGS.mode == "fewshot":
        metrics = trainer.fewshot_checkpoint(FLAGS.config, FLAGS.workdir)
    else:
        metrics = trainer.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)
    logging.info("Final metrics: %s", metrics)


def _refuse_renamed_fields(argv):
    """An override of a field that was renamed names the new field (ml_collections would only say that
    the old one does not exist)."""
    from tokenlearner_jax.recipes import RENAMED_FIELDS

    for arg in argv[1:]:
        for old, new in RENAMED_FIELDS:
            if arg.startswith(f"--config.{old}="):
                sys.exit(f"tokenlearner_jax: --config.{old} was renamed: use --config.{new}")


def run():
    _refuse_renamed_fields(sys.argv)
    app.run(main)


if __name__ == "__main__":
    run()
