"""pytest settings of the suite: the `slow` marker, and one persistent compilation cache for the whole
session (shared helpers live in helpers.py).

Many tests train the same tiny models, in this process and in main.py subprocesses (kill, resume,
sweeps); jax's persistent compilation cache lets every run after the first load the compiled programs
instead of compiling them again. The directory is new for each session, so no entry outlives it."""

import os
import shutil
import tempfile

_CACHE_DIR = tempfile.mkdtemp(prefix="tokenlearner_jax_test_xla_")
# Read by jax when imported and by main.py subprocesses; set it to '' to run the suite without a cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE_DIR)


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes minutes on 2 CPU cores (still run by `make test`)")


def pytest_unconfigure(config):
    shutil.rmtree(_CACHE_DIR, ignore_errors=True)
