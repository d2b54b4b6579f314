"""Train or evaluate a config: `python main.py --config=configs/quickstart.py --workdir=runs/quickstart`
(the repository's main.py runs this; installed as the console script `tokenlearner-train`).

Any config field can be overridden, e.g. `--config.model.token_learner.num_tokens=16`. For several
processes, pass --coordinator_address/--num_processes/--process_id, or launch under SLURM or on a
TPU pod slice, where they are read from the environment.

Exit codes: 0 done; 1 a bad config, file or workdir (one line on stderr; --verbose adds the
traceback); 75 stopped by SIGTERM / SIGINT (rerun the same command to resume); 76 another process
of a multi-process run died.
"""

import difflib
import logging as std_logging
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from tokenlearner_jax.train import allocator, preemption  # light: jax and the trainer are imported in main()

config_flags.DEFINE_config_file("config", None, "Path to a config file (configs/*.py[:arg]).", lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics.jsonl, TensorBoard and config.json.")
flags.DEFINE_enum("mode", "train", ["train", "eval", "fewshot"],
                  "train (resumes automatically), eval or fewshot (both on the latest checkpoint).")
flags.DEFINE_bool("allow_config_change", False,
                  "Resume although config.json differs in fields that shape the train state or the data "
                  "order; the checkpoint must still fit the new state.")
flags.DEFINE_bool("verbose", False, "Tracebacks for errors, and the libraries' own reports on the console.")
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for a multi-process run.")
flags.DEFINE_integer("num_processes", 0, "Number of processes of a multi-process run.")
flags.DEFINE_integer("process_id", -1, "This process's index in a multi-process run.")
flags.DEFINE_string("compilation_cache_dir", None,
                    "Where compiled XLA programs are kept, so that a rerun, a resume or another run of the same "
                    "model skips compiling them (jax's persistent compilation cache). Default: "
                    "$JAX_COMPILATION_CACHE_DIR if set, else ~/.cache/tokenlearner_jax/xla; '' (either) turns it off.")
flags.DEFINE_integer("heartbeat_timeout_seconds", 120,
                     "A multi-process run stops this long after a process stops answering, naming it.")
flags.DEFINE_integer("cpu_devices", 0,
                     "In a single-process run, the number of jax devices the CPU is split into, the step "
                     "data-parallel over them; 0: 2 where the host has 2 cores or more and the batch sizes split "
                     "in two, else 1 (train/distributed.py says why). No effect on GPUs and TPUs.")
flags.mark_flags_as_required(["config", "workdir"])
FLAGS = flags.FLAGS
EXIT_USER_ERROR = 1
EXIT_LOST_PROCESS = 76  # another process of a multi-process run died
DEFAULT_COMPILATION_CACHE_DIR = "~/.cache/tokenlearner_jax/xla"


def _user_errors() -> tuple:
    """Exceptions that mean a bad config, file, workdir or run (their message says which and what was
    expected), shown as one line rather than a traceback."""
    from tokenlearner_jax.train import checkpoint, workdir

    return (ValueError, OSError, FloatingPointError, workdir.WorkdirBusyError, checkpoint.CheckpointWriteError,
            checkpoint.CheckpointReadError, checkpoint.CheckpointDamagedError)


def _use_compilation_cache(path):
    """Points jax's persistent compilation cache at `path` (None: $JAX_COMPILATION_CACHE_DIR if set, else
    our default); '' turns it off."""
    import jax

    if path is None:
        path = os.environ.get("JAX_COMPILATION_CACHE_DIR", DEFAULT_COMPILATION_CACHE_DIR)
    jax.config.update("jax_compilation_cache_dir", os.path.expanduser(path) if path else None)


def _run(mode: str):
    import jax

    from tokenlearner_jax.train import trainer

    _use_compilation_cache(FLAGS.compilation_cache_dir)

    if mode == "fewshot":
        return trainer.fewshot_checkpoint(FLAGS.config, FLAGS.workdir)
    if mode == "eval":
        return trainer.evaluate_checkpoint(FLAGS.config, FLAGS.workdir)
    try:
        return trainer.run(FLAGS.config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
                           verbose=FLAGS.verbose)[1]
    except jax.errors.JaxRuntimeError as error:
        if jax.process_count() == 1:
            raise
        print(f"{preemption.MESSAGE_PREFIX}process {jax.process_index()} of {jax.process_count()}: a collective "
              f"failed ({str(error).splitlines()[0][:300]}); another process has probably died. Restart all "
              f"processes to resume from the last checkpoint.",
              file=sys.stderr, flush=True)
        # Not sys.exit: jax.distributed's shutdown at interpreter exit waits in a barrier that the lost
        # process never reaches, and aborts the process (SIGABRT) instead of exiting with our code.
        std_logging.shutdown()
        sys.stdout.flush()
        os._exit(EXIT_LOST_PROCESS)


def main(argv):
    del argv
    from tokenlearner_jax.train import console, distributed

    console.route_logs(FLAGS.workdir, FLAGS.verbose)

    distributed.split_cpu(FLAGS.config, FLAGS.cpu_devices, FLAGS.coordinator_address)
    distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                           heartbeat_timeout_seconds=FLAGS.heartbeat_timeout_seconds)
    # The trainer is imported after jax.distributed, which must come before any device use.
    try:
        metrics = _run(FLAGS.mode)
    except _user_errors() as error:
        if FLAGS.verbose:
            raise
        message = str(error).strip() or type(error).__name__
        print(f"{preemption.MESSAGE_PREFIX}error: {message} (--verbose for the traceback)", file=sys.stderr,
              flush=True)
        sys.exit(EXIT_USER_ERROR)
    logging.info("Final metrics: %s", metrics)


def _refuse_renamed_fields(argv):
    """An override of a field that was renamed names the new field (ml_collections would only say that
    the old one does not exist)."""
    from tokenlearner_jax.recipes import RENAMED_FIELDS

    for arg in argv[1:]:
        for old, new in RENAMED_FIELDS:
            if arg.startswith(f"--config.{old}="):
                sys.exit(f"tokenlearner_jax: --config.{old} was renamed: use --config.{new}")


def _parse_flags(argv):
    """absl's flag parsing, except that an override of a field the config does not have is one line that
    names it (ml_collections raises an AttributeError from a KeyError, shown as two tracebacks)."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError):
        missing = None if "--verbose" in argv[1:] else _missing_field(argv)
        if missing is None:
            raise
        sys.exit(f"{preemption.MESSAGE_PREFIX}error: {missing}")


def _missing_field(argv):
    """'--config.a.b: FILE has no field 'b'[; did you mean --config.a.c?]' for the first override in argv
    whose path the config file's get_config(arg) lacks; None where every path exists or the file does not
    load."""
    from tokenlearner_jax.recipes import sweeps

    config = next((arg.split("=", 1)[1] for arg in argv[1:] if arg.startswith("--config=")), None)
    try:
        config_file, arg = sweeps.split_config_path(config)
        loaded = sweeps.load_module(config_file).get_config(arg)
    except Exception:  # noqa: BLE001 -- then the original error, with its traceback, says more
        return None
    for override in argv[1:]:
        if not override.startswith("--config."):
            continue
        path = override.split("=", 1)[0][len("--config."):].split(".")
        node = loaded
        for depth, field in enumerate(path):
            fields = list(node.keys()) if hasattr(node, "keys") else []
            if field not in fields:
                prefix = ".".join(["--config", *path[:depth]])
                close = difflib.get_close_matches(field, fields, n=1)
                hint = f"; did you mean {prefix}.{close[0]}?" if close else ""
                return f"{prefix}.{field}: {config_file} has no field {field!r}{hint}"
            node = node[field]
    return None


def run():
    try:
        allocator.reexec_with_allocator()  # once, before anything starts (train/allocator.py says why)
    except ValueError as error:
        sys.exit(f"{preemption.MESSAGE_PREFIX}error: {error}")
    preemption.install()  # then at once, so that a signal during start-up exits 75 (train/preemption.py)
    from tokenlearner_jax.train import console

    console.quiet_native_logs(verbose="--verbose" in sys.argv[1:])
    _refuse_renamed_fields(sys.argv)
    preemption.exit_on_preemption(lambda: app.run(main, flags_parser=_parse_flags))


if __name__ == "__main__":
    run()
