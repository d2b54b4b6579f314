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
import time

from absl import logging as absl_logging

PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_FILE = "log.txt"


def quiet_native_logs(verbose: bool) -> None:
    """Before TensorFlow or jaxlib load: their C++ logging only for errors unless `verbose`."""
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class _OursAtWarning(logging.Filter):
    """Records of this package's own modules at WARNING or above."""

    def filter(self, record):
        return record.levelno >= logging.WARNING and os.path.abspath(record.pathname).startswith(PACKAGE_DIR)


def route_logs(workdir: str, verbose: bool) -> str:
    """Every log record to `<workdir>/log.txt`; to stderr only this package's warnings (or, with
    `verbose`, everything). Returns the log file's path."""
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, LOG_FILE)
    root = logging.getLogger()
    absl_handler = absl_logging.get_absl_handler()
    root.removeHandler(absl_handler)
    file_handler = logging.FileHandler(path, encoding="utf-8")
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
    """Progress lines from the averaged training metrics of each log window."""

    def __init__(self, total_steps: int, start_step: int):
        self.total_steps = total_steps
        self.start_step = start_step
        self.started = time.time()

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
