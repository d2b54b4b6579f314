"""main.py's re-execution with glibc's malloc asking for transparent huge pages (train/huge_pages.py):
when it applies, that it replaces the process with the same command and the tunable set, and that the
tunable is what makes XLA's per-call temporary buffer cost a few page faults instead of one per 4 KiB."""

import os
import subprocess
import sys
import textwrap

import pytest

from tokenlearner_jax.train import huge_pages

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mode_file(tmp_path, name, text):
    """A stand-in for /sys/kernel/mm/transparent_hugepage/enabled."""
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def test_tunable_asked_for_only_where_it_changes_something(tmp_path):
    madvise = _mode_file(tmp_path, "madvise", "always [madvise] never")
    always = _mode_file(tmp_path, "always", "[always] madvise never")
    never = _mode_file(tmp_path, "never", "always madvise [never]")
    glibc = (2, 36)
    assert huge_pages.tunables({}, madvise, glibc) == "glibc.malloc.hugetlb=1"
    # the user's other tunables are kept
    assert (huge_pages.tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, madvise, glibc)
            == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    # the user's own choice, or the environment of a process that was re-executed already
    assert huge_pages.tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, madvise, glibc) is None
    assert huge_pages.tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, madvise, glibc) is None
    # huge pages for all memory already, or for none: nothing to gain
    assert huge_pages.tunables({}, always, glibc) is None
    assert huge_pages.tunables({}, never, glibc) is None
    assert huge_pages.tunables({}, str(tmp_path / "missing"), glibc) is None
    # glibc before 2.35 has no such tunable
    assert huge_pages.tunables({}, madvise, (2, 34)) is None


def _child(code, env, *args):
    """stdout lines of `python -c code *args` run with `env` added to this environment."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **env}, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


def test_reexecution_keeps_the_process_and_its_arguments():
    expected = huge_pages.tunables({})
    code = """
        import os, sys
        print(os.getpid(), os.environ.get("GLIBC_TUNABLES") or "-", sys.argv[1:], flush=True)
        from tokenlearner_jax.train import huge_pages
        huge_pages.reexec_with_huge_pages()
        print(os.getpid(), os.environ.get("GLIBC_TUNABLES") or "-", sys.argv[1:])
    """
    lines = _child(code, {"GLIBC_TUNABLES": ""}, "--flag=1")
    if expected is None:  # nothing to gain on this machine: the process goes on as it is
        assert lines == [lines[0], lines[0]] and lines[0].split()[1] == "-", lines
        return
    # re-executed: the first run's lines, then the new program's two, all in one process
    first, again, after = (line.split(" ", 2) for line in lines)
    assert first[0] == again[0] == after[0], lines
    assert first[1] == "-" and again[1] == after[1] == expected, lines
    assert first[2] == again[2] == after[2] == "['--flag=1']", lines


_FAULTS_PER_CALL = """
    import resource
    import jax, jax.numpy as jnp
    x = jnp.ones((8192, 2048)); w = jnp.ones((2048, 64))
    step = jax.jit(lambda x, w: jnp.sum(jnp.sin(x) @ w))  # sin(x), 64 MiB, is a temporary buffer
    step(x, w).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step(x, w).block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def test_huge_pages_spare_the_page_faults_of_xlas_temporary_buffer():
    if huge_pages.tunables({}) is None:
        pytest.skip("transparent huge pages are not 'madvise' here, or glibc is older than 2.35")
    without = float(_child(_FAULTS_PER_CALL, {"GLIBC_TUNABLES": ""})[-1])
    with_huge_pages = float(_child(_FAULTS_PER_CALL, {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"})[-1])
    assert without > 10_000, without  # 64 MiB in 4 KiB pages, faulted in again at every call
    assert with_huge_pages < without / 10, (with_huge_pages, without)
