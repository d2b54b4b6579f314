"""The memory allocator main.py runs under: a small malloc front end that keeps XLA's temporary buffer
from one call to the next (the block cache), or glibc's malloc asking for transparent huge pages, or,
when asked for, jemalloc set to keep freed memory. main.py re-executes itself once, at start, with the
environment that picks it (the dynamic loader and glibc read it only when a process starts).

Why: XLA's CPU runtime mallocs a program's temporary buffer (1.4 GB for ViT-S/16's train step at batch
16, 2.7 GB for ViT-B/16's) at every call and frees it after. glibc hands a block that large out as a
fresh mmap and gives it back with munmap, so every step faults its temporary memory in again and the
kernel zeroes every page again: 1.7-2.1 s of system time per ViT-B/16 step (of 10.7 s) on an AMD EPYC
with 2 cores, whose host also takes back the memory the guest frees.

TOKENLEARNER_ALLOCATOR picks:
- `auto` (the default): the block cache where it can be built, else huge pages.
- `block_cache`: LD_PRELOAD of block_cache.c (beside this file), compiled with the system's C compiler
  (`cc`, or $CC) on first use into ~/.cache/tokenlearner_jax (or $XDG_CACHE_HOME): blocks of 32 MiB or
  more are kept when freed, a few of them, and each large request gets the smallest kept block it fits,
  so the train step gets back the buffer the last step freed, and its kernels' scratch blocks, already in
  memory: train steps 1.07-1.09x as fast as with huge pages alone (ViT-B/16, NesT-T, MaxViT-T), ViT-B/16's
  with 0.1 s of system time instead of 1.6-2.6, the same peak RSS (lever block_cache in
  experiments/results/levers.md; lever block_cache_several_blocks for keeping more than one). What it
  maps, in use and kept, stays within the most the program had in use at once and a sixty-fourth: a request
  that would pass that unmaps kept blocks first. glibc (with huge pages, as below) serves everything
  smaller. glibc only: the front end calls glibc's own __libc_malloc and friends.
- `huge_pages`: where the kernel gives huge pages only to memory that asks for them (`madvise` in
  /sys/kernel/mm/transparent_hugepage/enabled, the default of many distributions), glibc 2.35 or later
  asks for them with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: the buffer is faulted in 2 MiB at a time,
  though still zeroed at every call (lever huge_pages).
- `jemalloc` (`apt install libjemalloc2` on Debian and Ubuntu): LD_PRELOAD of jemalloc with
  MALLOC_CONF=narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1, which never gives freed memory
  back; but freed blocks that the next allocations cannot reuse stay in memory too: peak RSS up to 1.7x
  that with huge pages, and varying from run to run (lever jemalloc and docs/performance.md).
- `system`: the environment as it is.

Whatever the allocator, the trainer calls `release_free_memory` after each compilation: XLA's compiler
frees hundreds of MB to 2 GB (MaxViT-T's train step) that glibc keeps in its heaps, and every step's
temporary buffer would be allocated on top of it (lever release_compile_memory).

An LD_PRELOAD that already loads jemalloc or the block cache, or a GLIBC_TUNABLES that already names
glibc.malloc.hugetlb, is left alone, which is also what stops the re-executed process from re-executing
again.
"""

import contextlib
import ctypes.util
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from typing import Callable, Mapping, Optional

CHOICES = ("auto", "block_cache", "huge_pages", "jemalloc", "system")
BLOCK_CACHE_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "block_cache.c")
BLOCK_CACHE_NAME = "libtokenlearner_block_cache"
HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
JEMALLOC_CONF = "narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"
PR_SET_THP_DISABLE, PR_GET_THP_DISABLE = 41, 42  # prctl(2), Linux 3.15 or later


def glibc_version() -> Optional[tuple]:
    """(major, minor) of the C library this process runs on, or None where it is not glibc."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None


def find_jemalloc() -> Optional[str]:
    """The name the dynamic loader finds jemalloc by (e.g. 'libjemalloc.so.2'), or None."""
    return ctypes.util.find_library("jemalloc")


def cache_directory() -> str:
    """Where the block cache's compiled library is kept: $XDG_CACHE_HOME/tokenlearner_jax, by default
    ~/.cache/tokenlearner_jax."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "tokenlearner_jax")


def block_cache_library(directory: Optional[str] = None, compiler: Optional[str] = None,
                        source: str = BLOCK_CACHE_SOURCE) -> Optional[str]:
    """The path of block_cache.c (or another version of it, `source`) compiled into a shared library,
    compiling it into `directory` (by default `cache_directory()`) on first use with `compiler` (by
    default $CC, else cc); None where that cannot be done: not glibc, no C compiler, or the compiler
    failed. One file per source and compiler command, written under a temporary name and renamed, so that
    processes starting together never load a half-written library."""
    if glibc_version() is None:
        return None
    command = shlex.split(compiler or os.environ.get("CC") or "cc")
    if not command or not shutil.which(command[0]):
        return None
    with open(source, "rb") as f:
        code = f.read()
    flags = ["-O2", "-shared", "-fPIC", "-pthread"]
    digest = hashlib.sha256(code + " ".join(command + flags).encode()).hexdigest()[:16]
    directory = directory or cache_directory()
    path = os.path.join(directory, f"{BLOCK_CACHE_NAME}-{digest}.so")
    if os.path.exists(path):
        return path
    try:
        os.makedirs(directory, exist_ok=True)
        descriptor, partial = tempfile.mkstemp(suffix=".so", dir=directory)
        os.close(descriptor)
        try:
            subprocess.run([*command, *flags, "-o", partial, source], check=True,
                           capture_output=True, timeout=120)
            os.replace(partial, path)
        finally:
            if os.path.exists(partial):
                os.remove(partial)
    except (OSError, subprocess.SubprocessError):
        return None
    return path


def huge_page_tunables(environ: Mapping[str, str], thp_mode_file: str = THP_MODE_FILE,
                       libc: Optional[tuple] = None) -> Optional[str]:
    """The GLIBC_TUNABLES value that asks for huge pages, keeping any tunables already set; None where it
    would change nothing or is not ours to set: not glibc 2.35 or later, the kernel gives huge pages to
    all memory or to none, or GLIBC_TUNABLES already names glibc.malloc.hugetlb."""
    current = environ.get("GLIBC_TUNABLES", "")
    if HUGETLB_TUNABLE in current:
        return None
    libc = libc or glibc_version()
    if libc is None or libc < (2, 35):
        return None
    try:
        with open(thp_mode_file, encoding="ascii") as f:
            if "[madvise]" not in f.read():
                return None
    except OSError:
        return None
    return ":".join(filter(None, [current, f"{HUGETLB_TUNABLE}=1"]))


def environment(environ: Mapping[str, str] = os.environ, jemalloc: Callable[[], Optional[str]] = find_jemalloc,
                thp_mode_file: str = THP_MODE_FILE, libc: Optional[tuple] = None,
                block_cache: Callable[[], Optional[str]] = block_cache_library) -> dict:
    """The environment variables to set for the allocator TOKENLEARNER_ALLOCATOR picks; {} where the
    process runs as it should already. Raises ValueError for a choice that cannot be honoured."""
    choice = environ.get("TOKENLEARNER_ALLOCATOR", "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"TOKENLEARNER_ALLOCATOR={choice!r}: expected one of {', '.join(CHOICES)}")
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system" or "jemalloc" in preload or BLOCK_CACHE_NAME in preload:
        return {}
    if choice == "jemalloc":
        library = jemalloc()
        if not library:
            raise ValueError("TOKENLEARNER_ALLOCATOR=jemalloc: the dynamic loader finds no libjemalloc; "
                             "install it (apt install libjemalloc2) or unset the variable")
        return {"LD_PRELOAD": " ".join(filter(None, [preload, library])),
                "MALLOC_CONF": environ.get("MALLOC_CONF") or JEMALLOC_CONF}
    changes = {}
    if choice in ("auto", "block_cache"):
        library = block_cache()
        if library:
            changes["LD_PRELOAD"] = " ".join(filter(None, [preload, library]))
        elif choice == "block_cache":
            raise ValueError("TOKENLEARNER_ALLOCATOR=block_cache: it needs glibc and a C compiler (cc, or $CC) "
                             f"to build {BLOCK_CACHE_SOURCE}; install one (apt install gcc) or unset the variable")
    tunables = huge_page_tunables(environ, thp_mode_file, libc)
    if tunables:
        changes["GLIBC_TUNABLES"] = tunables
    return changes


def release_free_memory() -> None:
    """Gives the memory malloc holds free back to the system: the block cache's kept blocks, where it is
    loaded, and glibc's free memory (malloc_trim(0), which also releases free pages inside its heaps);
    does nothing where the C library is not glibc."""
    if glibc_version() is not None:
        process = ctypes.CDLL(None)
        if hasattr(process, "tokenlearner_block_cache_release"):
            process.tokenlearner_block_cache_release()
        process.malloc_trim(0)


@contextlib.contextmanager
def small_pages():
    """Memory first touched inside gets 4 KiB pages, not transparent huge pages, whatever asked for them
    (prctl PR_SET_THP_DISABLE on this process, restored after); does nothing where that cannot be set.

    For memory touched once, as the initial state: on a virtual machine whose host takes back the memory
    its guest frees, a huge page met for the first time here cost 4-18 ms (1 GiB in huge pages took 2-9 s
    of system time), against 1-2 ms for the same 2 MiB in 4 KiB pages (0.5-0.9 s a GiB), which made ViViT-B/16x2's
    initialisation run 3.5-4.6 s instead of 0.6 s (lever init_small_pages in experiments/results/levers.md).
    Huge pages pay off only for memory touched again and again, as the train step's temporary buffer."""
    prctl = getattr(ctypes.CDLL(None), "prctl", None) if sys.platform.startswith("linux") else None
    previous = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0) if prctl else -1
    changed = previous == 0 and prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        if changed:
            prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0)


def block_cache_stats() -> Optional[dict]:
    """What the block cache did with this process's large requests so far (hits: served by a kept
    block; misses: freshly mapped; waits for a block in use to be freed, and timeouts of those), or None
    where it is not loaded."""
    process = ctypes.CDLL(None)
    if not hasattr(process, "tokenlearner_block_cache_stats"):
        return None
    counts = (ctypes.c_long * 4)()
    process.tokenlearner_block_cache_stats(counts)
    return dict(zip(("hits", "misses", "waits", "timeouts"), counts))


def reexec_with_allocator() -> None:
    """Replaces this process by the same command under the allocator `environment` picks, where that
    changes something; else returns. Call it first, before anything is printed or started."""
    changes = environment()
    if not changes or not sys.executable or not getattr(sys, "orig_argv", None):
        return
    os.environ.update(changes)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
