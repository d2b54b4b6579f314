"""main.py's re-execution under a better malloc for XLA (train/allocator.py): which allocator it picks
and when, that it replaces the process with the same command and the variables set, and that each
allocator is what makes XLA's per-call temporary buffer cost few or no page faults."""

import json
import os
import pathlib
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


def test_block_cache_by_default_else_huge_pages_jemalloc_when_asked_for(tmp_path):
    madvise = _mode_file(tmp_path, "madvise", "always [madvise] never")
    library = "/cache/libtokenlearner_block_cache-0123.so"

    def pick(environ, installed=True, compiled=True):
        return allocator.environment(environ, lambda: "libjemalloc.so.2" if installed else None, madvise, GLIBC,
                                     lambda: library if compiled else None)

    jemalloc = {"LD_PRELOAD": "libjemalloc.so.2", "MALLOC_CONF": allocator.JEMALLOC_CONF}
    huge_pages = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}
    block_cache = {"LD_PRELOAD": library, **huge_pages}
    assert pick({}) == pick({"TOKENLEARNER_ALLOCATOR": "auto"}) == block_cache
    assert pick({"TOKENLEARNER_ALLOCATOR": "block_cache"}) == block_cache
    assert pick({}, compiled=False) == pick({"TOKENLEARNER_ALLOCATOR": "huge_pages"}) == huge_pages
    assert pick({"LD_PRELOAD": "libfoo.so"}) == {"LD_PRELOAD": f"libfoo.so {library}", **huge_pages}
    assert pick({"LD_PRELOAD": library}) == {}  # the re-executed process
    with pytest.raises(ValueError, match="TOKENLEARNER_ALLOCATOR=block_cache: it needs glibc and a C compiler"):
        pick({"TOKENLEARNER_ALLOCATOR": "block_cache"}, compiled=False)
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
    with pytest.raises(ValueError, match="TOKENLEARNER_ALLOCATOR='tcmalloc': expected one of auto, block_cache, "
                                         "huge_pages, jemalloc"):
        pick({"TOKENLEARNER_ALLOCATOR": "tcmalloc"})


def _child(code, env, *args):
    """stdout lines of `python -c code *args` run with `env` added to this environment."""
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": ROOT, **env}, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines()


@pytest.mark.parametrize("choice", ["auto", "huge_pages", "jemalloc"])
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
        "tokenlearner_jax: error: TOKENLEARNER_ALLOCATOR='tcmalloc': expected one of auto, block_cache, huge_pages, "
        "jemalloc, system"]
    assert not workdir.exists()


_FAULTS_PER_CALL = """
    import json, resource
    import jax, jax.numpy as jnp
    x = jnp.ones((8192, 2048)); w = jnp.ones((2048, 64))
    step = jax.jit(lambda x, w: jnp.sum(jnp.sin(x) @ w))  # sin(x), 64 MiB, is a temporary buffer
    step(x, w).block_until_ready()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        step(x, w).block_until_ready()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
    from tokenlearner_jax.train import allocator
    print(json.dumps(allocator.block_cache_stats()))
"""


def _faults_per_call(**env):
    """(page faults per call of a program with a 64 MiB temporary buffer, block cache stats or None)."""
    lines = _child(_FAULTS_PER_CALL, {**NO_CHOICE, **env})
    return float(lines[-2]), json.loads(lines[-1])


def _block_cache():
    library = allocator.block_cache_library()
    if library is None:
        pytest.skip("the block cache needs glibc and a C compiler (cc)")
    return library


def test_block_cache_is_compiled_once_per_source_and_compiler(tmp_path):
    _block_cache()
    first = allocator.block_cache_library(str(tmp_path))
    assert first and os.path.dirname(first) == str(tmp_path), first
    made = os.stat(first).st_mtime_ns
    assert allocator.block_cache_library(str(tmp_path)) == first and os.stat(first).st_mtime_ns == made
    assert os.listdir(tmp_path) == [os.path.basename(first)]  # no half-written file left behind
    # another compiler command is another library; a compiler that fails or is missing gives None
    assert allocator.block_cache_library(str(tmp_path), "cc -g") not in (None, first)
    other_source = tmp_path / "other" / "block_cache.c"  # another version of the source: another library
    other_source.parent.mkdir()
    other_source.write_text(pathlib.Path(allocator.BLOCK_CACHE_SOURCE).read_text() + "\n/* another version */\n")
    assert allocator.block_cache_library(str(tmp_path), source=str(other_source)) not in (None, first)
    assert allocator.block_cache_library(str(tmp_path), "cc -no-such-flag") is None
    assert allocator.block_cache_library(str(tmp_path), "no-such-compiler") is None


def test_block_cache_reuses_xlas_temporary_buffer_without_page_faults():
    library = _block_cache()
    system, no_stats = _faults_per_call()
    cached, stats = _faults_per_call(LD_PRELOAD=library)
    assert no_stats is None
    assert system > 10_000, system  # 64 MiB in 4 KiB pages, faulted in again at every call
    assert stats["hits"] >= 5, stats  # the same buffer again at every timed call, already in memory
    assert cached < system / 10, (cached, system)


_BLOCKS = """
    import ctypes, json
    from tokenlearner_jax.train import allocator
    libc = ctypes.CDLL(None)
    for name in ("malloc", "calloc", "realloc", "reallocarray"):
        getattr(libc, name).restype = ctypes.c_void_p
    libc.reallocarray.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    MiB = 2 ** 20
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / MiB
    out = {}
    a = libc.malloc(256 * MiB); ctypes.memset(a, 7, 256 * MiB); libc.free(a)
    out["kept"] = rss()
    b = libc.malloc(200 * MiB)  # fits the kept 256 MiB block: the same block, not zeroed
    out["same_block"] = b == a and ctypes.string_at(b + 100 * MiB, 4) == bytes([7] * 4)
    libc.free(b)
    c = libc.calloc(50, 4 * MiB)  # 200 MiB zeroed, from the kept block
    out["calloc_zeroed"] = c == a and ctypes.string_at(c, 4096) == bytes(4096) and ctypes.string_at(
        c + 200 * MiB - 4096, 4096) == bytes(4096)
    c = libc.realloc(c, 240 * MiB)  # still fits: in place
    out["realloc_in_place"] = c == a and libc.reallocarray(c, 60, 4 * MiB) == a
    libc.free(c)
    # A program's call: a 3 GiB buffer (never written), and inside it a 100 MiB and then a 40 MiB block. The
    # first call takes more than the most in use so far (256 MiB) and a 64th: the kept 256 MiB block is unmapped.
    for call in range(2):
        t = libc.malloc(3072 * MiB)
        if call == 0:
            out["old_block_unmapped"] = rss()
        x = libc.malloc(100 * MiB); ctypes.memset(x, 1, 100 * MiB); libc.free(x)
        y = libc.malloc(40 * MiB); ctypes.memset(y, 1, 40 * MiB); libc.free(y)  # 100 MiB does not serve 40
        libc.free(t)  # kept with the two others: 3212 MiB, within 3172 MiB (the most in use) and a 64th
    out["three_kept"] = rss()
    allocator.release_free_memory()
    out["released"] = rss()
    e = libc.malloc(100 * MiB)
    f = libc.malloc(100 * MiB)  # waits for e to be freed, in vain: 100 MiB is not waited for again
    libc.free(e); libc.free(f)
    g = libc.malloc(100 * MiB)  # e, kept
    h = libc.malloc(100 * MiB)  # f, kept too: both were freed with neither in use
    ctypes.memset(h, 1, 100 * MiB)
    libc.free(g)
    out["h_in_use"] = rss()
    allocator.release_free_memory()  # unmaps g, and h when it is freed (as a step still running)
    libc.free(h)
    out["h_freed"] = rss()
    out["stats"] = allocator.block_cache_stats()
    print(json.dumps(out))
"""


def test_block_cache_keeps_blocks_within_the_most_in_use_and_gives_them_back():
    library = _block_cache()
    out = json.loads(_child(_BLOCKS, {**NO_CHOICE, "LD_PRELOAD": library})[-1])
    assert out["same_block"] and out["calloc_zeroed"] and out["realloc_in_place"], out
    assert out["kept"] - out["old_block_unmapped"] > 200, out
    assert out["three_kept"] - out["released"] > 130, out  # the 100 and 40 MiB blocks, written, were kept
    assert out["h_in_use"] - out["h_freed"] > 90, out
    # hits: b, c; the second call's three blocks; g, h. misses: a; the first call's three; e, f
    assert out["stats"] == {"hits": 7, "misses": 6, "waits": 1, "timeouts": 1}, out


_THREADS = """
    import ctypes, json, random, threading
    from tokenlearner_jax.train import allocator
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.usleep.argtypes = [ctypes.c_uint]
    MiB = 2 ** 20
    overwritten = []
    def work(seed):  # ctypes calls run without the GIL: the threads allocate at the same time
        rng = random.Random(seed)
        for i in range(40):
            n = rng.choice((40, 64, 100)) * MiB
            p = libc.malloc(n)
            tag = bytes([(seed * 40 + i) % 256]) * 8
            ctypes.memmove(p, tag, 8); ctypes.memmove(p + n - 8, tag, 8)
            libc.usleep(rng.randrange(3000))
            if ctypes.string_at(p, 8) != tag or ctypes.string_at(p + n - 8, 8) != tag:
                overwritten.append((seed, i))
            libc.free(p)
    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"overwritten": overwritten, "stats": allocator.block_cache_stats()}))
"""


def test_block_cache_serves_threads_allocating_at_once():
    library = _block_cache()
    out = json.loads(_child(_THREADS, {**NO_CHOICE, "LD_PRELOAD": library})[-1])
    assert out["overwritten"] == [], out  # no block handed to two threads at once
    stats = out["stats"]
    assert stats["hits"] + stats["misses"] == 240 and stats["hits"] > 0 and stats["waits"] > 0, stats


def test_jemalloc_reuses_xlas_temporary_buffer_without_page_faults():
    library = allocator.find_jemalloc()
    if library is None:
        pytest.skip("jemalloc is not installed here (apt install libjemalloc2)")
    system, _ = _faults_per_call()
    jemalloc, _ = _faults_per_call(LD_PRELOAD=library, MALLOC_CONF=allocator.JEMALLOC_CONF)
    assert system > 10_000, system  # 64 MiB in 4 KiB pages, faulted in again at every call
    assert jemalloc < 100, (jemalloc, system)  # the same buffer again, already in memory


def test_huge_pages_spare_most_page_faults_of_xlas_temporary_buffer():
    if allocator.huge_page_tunables({}) is None:
        pytest.skip("transparent huge pages are not 'madvise' here, or glibc is older than 2.35")
    system = _faults_per_call()[0]
    huge_pages = _faults_per_call(GLIBC_TUNABLES="glibc.malloc.hugetlb=1")[0]
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


def test_small_pages_gives_4k_pages_to_memory_that_asks_for_huge_ones():
    """A 64 MiB mapping that asks for transparent huge pages gets them outside `small_pages` and none inside
    it; the process's setting is restored after."""
    try:
        with open(allocator.THP_MODE_FILE, encoding="ascii") as f:
            if "[never]" in f.read():
                pytest.skip("transparent huge pages are off here")
    except OSError:
        pytest.skip("no transparent huge pages here")
    code = """
        import ctypes, mmap
        from tokenlearner_jax.train import allocator
        libc = ctypes.CDLL(None)
        def huge_kib_of_fresh_mapping():
            block = mmap.mmap(-1, 64 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            block.madvise(mmap.MADV_HUGEPAGE)
            block.write(b"x" * (64 << 20))
            start = ctypes.addressof(ctypes.c_char.from_buffer(block))
            huge, inside = 0, False
            with open("/proc/self/smaps") as f:
                for line in f:
                    if "-" in line.split()[0] and ":" not in line.split()[0]:
                        low, high = (int(part, 16) for part in line.split()[0].split("-"))
                        inside = low <= start < high
                    elif inside and line.startswith("AnonHugePages:"):
                        huge = int(line.split()[1])
            return huge
        with allocator.small_pages():
            during = libc.prctl(allocator.PR_GET_THP_DISABLE, 0, 0, 0, 0)
            small = huge_kib_of_fresh_mapping()
        print(during, libc.prctl(allocator.PR_GET_THP_DISABLE, 0, 0, 0, 0), small, huge_kib_of_fresh_mapping())
    """
    during, after, small, huge = map(int, _child(code, NO_CHOICE)[-1].split())
    assert (during, after) == (1, 0)
    assert small == 0
    assert huge >= 32 << 10, huge  # at least half of it in huge pages
