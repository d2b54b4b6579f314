"""What a run prints, and where library chatter goes.

By default the console (stdout) shows a start-up summary, one progress line per log step (step, loss,
learning rate, steps/s measured over completed steps, ETA), evaluation results, one line per
checkpoint, and at the end where everything was written. Warnings that matter reach stderr: those
that this package logs at WARNING or above (skipped files, a checkpoint fallen back from, non-finite
steps). Everything else that TensorFlow, XLA, absl, orbax, grain and clu log goes to `<workdir>/log.txt`
with our own INFO messages. `--verbose` restores the libraries' output on the console.
"""

import logging
import math
import os
import sys

from absl import logging as absl_logging


PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_FILE = "log.txt"


def quiet_native_logs(verbose: bool) -> None:
    """Before TensorFlow or jaxlib load: their C++ logging only for errors unless `verbose`. TensorFlow
    itself is imported only by runs that read TFDS datasets (tensorboard_events.py writes the event files
    without it)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class _OursAtWarning(logging.Filter):
    """Records of this package's own modules at WARNING or above."""

    def filter(self, record):
        return record.levelno >= logging.WARNING and os.path.abspath(record.pathname).startswith(PACKAGE_DIR)


class _LogFileHandler(logging.FileHandler):
    """A file handler that, when the file cannot be written (a full disk), says so once on stderr and
    drops later records instead of printing a traceback for each."""

    failed = False

    def handleError(self, record):
        if not self.failed:
            self.failed = True
            print(f"tokenlearner_jax: warning: cannot write the log file {self.baseFilename} "
                  f"({sys.exc_info()[1]}); library messages are dropped from now on", file=sys.stderr, flush=True)


def log_file(workdir: str, process_index: int = 0) -> str:
    """`<workdir>/log.txt` for process 0, `<workdir>/log.process<i>.txt` for the others."""
    return os.path.join(workdir, LOG_FILE if process_index == 0 else f"log.process{process_index}.txt")


def route_logs(workdir: str, verbose: bool, process_index: int = 0) -> str:
    """Every log record to this process's log file in `workdir`; to stderr only this package's warnings
    (or, with `verbose`, everything). Returns the log file's path."""
    path = log_file(workdir, process_index)
    try:
        os.makedirs(workdir, exist_ok=True)
        file_handler = _LogFileHandler(path, encoding="utf-8")
    except OSError:  # the trainer's write probe names the problem with the workdir
        return None
    root = logging.getLogger()
    absl_handler = absl_logging.get_absl_handler()
    root.removeHandler(absl_handler)
    file_handler.setFormatter(absl_logging.PythonFormatter())
    root.addHandler(file_handler)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    if not verbose:
        console.addFilter(_OursAtWarning())
    root.addHandler(console)
    root.setLevel(logging.INFO)
    absl_logging.set_verbosity(absl_logging.INFO)
    return path


def say(message: str) -> None:
    """One line for people, on stdout (and in the log file)."""
    print(message, flush=True)
    logging.getLogger(__name__).debug(message)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Progress:
    """Progress lines from the averaged training metrics of each log window ('train/steps_per_sec' is
    measured between two log steps, whose metrics are read back: steps that ran, not steps queued)."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def line(self, step: int, summary: dict) -> str:
        rate = summary.get("train/steps_per_sec", float("nan"))
        eta = (self.total_steps - step) / rate if rate and rate > 0 else float("nan")
        parts = [f"step {step}/{self.total_steps}"]
        for name in ("train/loss", "train/learning_rate"):
            if name in summary:
                parts.append(f"{name.split('/', 1)[1].replace('learning_rate', 'lr')} {summary[name]:.4g}")
        parts.append(f"{rate:.2f} steps/s")
        parts.append(f"ETA {_duration(eta)}")
        if summary.get("train/skipped_steps"):
            parts.append(f"{int(summary['train/skipped_steps'])} non-finite steps skipped")
        return "  ".join(parts)


def format_metrics(step: int, metrics: dict) -> str:
    """'eval step 500: accuracy 0.9722  loss 0.1761  ...' per prefix ('eval', 'eval_ema', 'fewshot')."""
    groups = {}
    for name, value in metrics.items():
        prefix, _, short = name.partition("/")
        groups.setdefault(prefix, []).append(f"{short} {value:.4g}" if isinstance(value, float) else f"{short} {value}")
    return "\n".join(f"{prefix} step {step}: " + "  ".join(items) for prefix, items in groups.items())


def startup_summary(config, info, report: dict, mesh, total_steps: int, workdir: str, start_step: int) -> str:
    """The lines a run starts with: task and model, data, devices and mesh, schedule, workdir."""
    import jax

    model = config.get("model")
    name = f"{model.name} {model.get('variant', '')}".strip() if model is not None else config.task
    size = []
    if "model/num_params" in report:
        size.append(f"{report['model/num_params'] / 1e6:.2f}M parameters")
    if "model/gmacs" in report:
        size.append(f"{report['model/gmacs']:.3g} GMACs per example")
    devices = jax.devices()
    lines = [
        f"{config.task}: {name}" + (f" ({', '.join(size)})" if size else ""),
        f"data: {info.name}, {info.num_train} train / {info.num_eval} eval examples of shape "
        f"{tuple(info.image_shape)}",
        f"devices: {len(devices)} x {devices[0].device_kind} ({jax.default_backend()}), "
        f"{jax.process_count()} process(es); mesh {dict(mesh.shape)}",
        f"schedule: {total_steps} steps of batch {config.batch_size}" +
        (f"; resuming from the checkpoint of step {start_step}" if start_step else ""),
        f"workdir: {workdir} (library messages: {os.path.join(workdir, LOG_FILE)})",
    ]
    return "\n".join(lines)


def accelerator_warnings(config) -> list[str]:
    """Warnings when the config looks meant for an accelerator but JAX found only the CPU."""
    import jax

    if jax.default_backend() != "cpu":
        return []
    reasons = []
    model = config.get("model")
    if model is not None and str(model.get("dtype", "float32")) == "bfloat16":
        reasons.append("the model computes in bfloat16")
    if config.batch_size >= 1024:
        reasons.append(f"batch_size is {config.batch_size}")
    if not reasons:
        return []
    return [f"only the CPU is visible to JAX, but {' and '.join(reasons)}: a GPU or TPU was probably meant. "
            f"Install JAX for it (pip install -e '.[cuda]' or '.[tpu]'; docs/trainer.md) and check "
            f"`python -c 'import jax; print(jax.devices())'`."]


def where_results_went(workdir: str) -> str:
    """The last lines of a run: where its outputs are and how to look at them."""
    return "\n".join([
        f"done. metrics: {os.path.join(workdir, 'metrics.jsonl')}",
        f"checkpoints: {os.path.join(workdir, 'checkpoints')}   log: {os.path.join(workdir, LOG_FILE)}",
        f"curves: python -m tokenlearner_jax.visualize curves --workdir={workdir}   "
        f"TensorBoard: tensorboard --logdir={workdir}",
    ])
