"""main.py's re-execution under a better malloc for XLA (train/allocator.py): which allocator it picks
and when, that it replaces the process with the same command and the variables set, and that each
allocator is what makes XLA's per-call temporary buffer cost few or no page faults."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tokenlearner_jax.train import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLIBC = (2, 36)
NO_CHOICE = {"TOKENLEARNER_ALLOCATOR": "", "LD_PRELOAD": "", "MALLOC_CONF": "", "GLIBC_TUNABLES": ""}


def _mode_file(tmp_path, name, text):
    """A stand-in for /sys/kernel/mm/transparent_hugepage/enabled."""
    path = tmp_path / name
    path.write_text(text + "\n")
    return str(path)


def test_huge_pages_asked_for_only_where_they_change_something(tmp_path):
    madvise = _mode_file(tmp_path, "madvise", "always [madvise] never")
    always = _mode_file(tmp_path, "always", "[always] madvise never")
    never = _mode_file(tmp_path, "never", "always madvise [never]")
    assert allocator.huge_page_tunables({}, madvise, GLIBC) == "glibc.malloc.hugetlb=1"
    # the user's other tunables are kept
    assert (allocator.huge_page_tunables({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}, madvise, GLIBC)
            == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1")
    # the user's own choice, or the environment of a process that was re-executed already
    assert allocator.huge_page_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}, madvise, GLIBC) is None
    assert allocator.huge_page_tunables({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, madvise, GLIBC) is None
    # huge pages for all memory already, or for none: nothing to gain
    assert allocator.huge_page_tunables({}, always, GLIBC) is None
    assert allocator.huge_page_tunables({}, never, GLIBC) is None
    assert allocator.huge_page_tunables({}, str(tmp_path / "missing"), GLIBC) is None
    # glibc before 2.35 has no such tunable
    assert allocator.huge_page_tunables({}, madvise, (2, 34)) is None


def test_huge_pages_by_default_jemalloc_when_asked_for(tmp_path):
    madvise = _mode_file(tmp_path, "madvise", "always [madvise] never")

    def pick(environ, installed=True):
        return allocator.environment(environ, lambda: "libjemalloc.so.2" if installed else None, madvise, GLIBC)

    jemalloc = {"LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": allocator.JEMALLOC_CONF}
    huge_pages = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    assert pick({}) == pick({"TOKENLEARNER_ALLOCATOR": "auto"}) == huge_pages
    assert pick({"TOKENLEARNER_ALLOCATOR": "jemalloc"}) == jemalloc
    assert pick({"TOKENLEARNER_ALLOCATOR": "system"}) == {}
    # the user's own preloads and jemalloc options are kept
    assert pick({"TOKENLEARNER_ALLOCATOR": "jemalloc", "LD_PRELOAD": "libfoo.so", "MALLOC_CONF": "narenas:2"}) == {
        "LD_PRELOAD": "libfoo.so libjemalloc.so.2", "MALLOC_CONF": "narenas:2"}
    # jemalloc loaded already (by the user, or by the re-execution): nothing more to do
    assert pick({"TOKENLEARNER_ALLOCATOR": "jemalloc", "LD_PRELOAD": "/opt/lib/libjemalloc.so"}) == {}
    assert pick({"LD_PRELOAD": "/opt/lib/libjemalloc.so"}) == {}
    with pytest.raises(ValueError, match="TOKENLEARNER_ALLOCATOR=jemalloc: .*libjemalloc"):
        pick({"TOKENLEARNER_ALLOCATOR": "jemalloc"}, installed=False)
    with pytest.raises(ValueError, match="TOKENLEARNER_ALLOCATOR='tcmalloc': expected one of auto, jemalloc"):
        pick({"TOKENLEARNER_ALLOCATOR": "tcmalloc"})


def _child(code, env, *args):
    """stdout lines of `python -c code *args` run with `env` added to this environment."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **env}, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("choice", ["auto", "jemalloc"])
def test_reexecution_keeps_the_process_and_its_arguments(choice):
    if choice == "jemalloc" and allocator.find_jemalloc() is None:
        pytest.skip("jemalloc is not installed here (apt install libjemalloc2)")
    env = {**NO_CHOICE, "TOKENLEARNER_ALLOCATOR": choice}
    expected = allocator.environment(env)
    code = """
        import json, os, sys
        def show():
            chosen = {name: os.environ[name] for name in ("LD_PRELOAD", "MALLOC_CONF", "GLIBC_TUNABLES")
                      if os.environ.get(name)}
            print(os.getpid(), json.dumps(sys.argv[1:]), json.dumps(chosen), flush=True)
        show()
        from tokenlearner_jax.train import allocator
        allocator.reexec_with_allocator()
        show()
    """
    lines = [line.split(" ", 2) for line in _child(code, env, "--flag=1")]
    if not expected:  # nothing to gain on this machine: the process goes on as it is
        assert len(lines) == 2 and lines[0] == lines[1] and lines[0][2] == "{}", lines
        return
    # re-executed: the first run's line, then the new program's two, all in one process
    assert len(lines) == 3 and lines[0][0] == lines[1][0] == lines[2][0], lines
    assert lines[0][1] == lines[1][1] == lines[2][1] == '["--flag=1"]', lines
    assert lines[0][2] == "{}" and json.loads(lines[1][2]) == json.loads(lines[2][2]) == expected, lines


def test_main_names_a_bad_allocator_choice_in_one_line(tmp_path):
    workdir = tmp_path / "run"
    result = subprocess.run([sys.executable, "main.py", "--config=configs/quickstart.py", f"--workdir={workdir}"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300,
                            env={**os.environ, "PYTHONPATH": ROOT, "TOKENLEARNER_ALLOCATOR": "tcmalloc"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "tokenlearner_jax: error: TOKENLEARNER_ALLOCATOR='tcmalloc': expected one of auto, jemalloc, system"]
    assert not workdir.exists()


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


def _faults_per_call(**env):
    return float(_child(_FAULTS_PER_CALL, {**NO_CHOICE, **env})[-1])


def test_jemalloc_reuses_xlas_temporary_buffer_without_page_faults():
    library = allocator.find_jemalloc()
    if library is None:
        pytest.skip("jemalloc is not installed here (apt install libjemalloc2)")
    system = _faults_per_call()
    jemalloc = _faults_per_call(LD_PRELOAD=library, MALLOC_CONF=allocator.JEMALLOC_CONF)
    assert system > 10_000, system  # 64 MiB in 4 KiB pages, faulted in again at every call
    assert jemalloc < 100, (jemalloc, system)  # the same buffer again, already in memory


def test_huge_pages_spare_most_page_faults_of_xlas_temporary_buffer():
    if allocator.huge_page_tunables({}) is None:
        pytest.skip("transparent huge pages are not 'madvise' here, or glibc is older than 2.35")
    system = _faults_per_call()
    huge_pages = _faults_per_call(GLIBC_TUNABLES="glibc.malloc.hugetlb=1")
    assert system > 10_000, system
    assert huge_pages < system / 10, (huge_pages, system)


def test_release_free_memory_gives_freed_heap_memory_back():
    """256 MiB freed in 64 KiB blocks stays in the heap (the block after it stops glibc trimming the top);
    release_free_memory hands it back."""
    if allocator.glibc_version() is None:
        pytest.skip("not glibc")
    code = """
        import ctypes
        from tokenlearner_jax.train import allocator
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.free.argtypes = [ctypes.c_void_p]
        def rss_mib():
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * 4096 / 2 ** 20
        blocks = [libc.malloc(65536) for _ in range(4096)]
        for block in blocks:
            ctypes.memset(block, 1, 65536)
        last = libc.malloc(65536)
        for block in blocks:
            libc.free(block)
        kept = rss_mib()
        allocator.release_free_memory()
        print(kept, rss_mib())
    """
    kept, released = map(float, _child(code, NO_CHOICE)[-1].split())
    assert kept - released > 200, (kept, released)
