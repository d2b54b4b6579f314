"""The memory allocator main.py runs under: glibc's malloc keeping what it frees in its main heap and
asking for transparent huge pages, or, when asked for, jemalloc set to keep freed memory. main.py
re-executes itself once, at start, with the environment that picks it (the dynamic loader and glibc read
it only when a process starts), and has jax run CPU programs on the calling thread (`run_cpu_programs_inline`).

Why: XLA's CPU runtime mallocs a program's temporary buffer (about 2 GB for ViT-S/16's train step at
batch 16, 3.3 GB for NesT-T's) at every call and frees it after. glibc hands a block that large out as
a fresh mmap and gives it back with munmap, so every step faults its temporary memory in again, one
4 KiB page at a time, and the kernel zeroes each page: 516k page faults and 1.2 s of system time per
ViT-S/16 step (of 7.5 CPU s) on an AMD EPYC with 2 cores. On a virtual machine whose host takes back
the memory the guest frees (free page reporting, as on the machines our benchmarks ran on), the memory
also has to come back from the host: NesT-T's step took 4.5-5.9 s of system time after 10 s idle.

- By default (glibc 2.26 or later), GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=...:
  no block is mmap'ed by the main heap and the heap is never trimmed, so what a call frees stays in memory
  and the next call's buffer is the same block, already faulted in. This needs the buffer to be malloc'ed
  by the thread that calls the program (glibc's other arenas still mmap blocks of 64 MiB and more), hence
  `run_cpu_programs_inline`. NesT-T's train step then took no page faults and 0.01-0.05 s of system time,
  back to back or after 10 s idle, at the same peak RSS (lever keep_freed_heap in
  experiments/results/levers.md). The price: the process does not give memory back to the system
  before it ends.
- Also by default, where the kernel gives huge pages only to memory that asks for them (`madvise` in
  /sys/kernel/mm/transparent_hugepage/enabled, the default of many distributions), glibc 2.35 or later
  asks for them with glibc.malloc.hugetlb=1: memory is faulted in 2 MiB at a time (lever huge_pages).
- TOKENLEARNER_ALLOCATOR=jemalloc (`apt install libjemalloc2` on Debian and Ubuntu): LD_PRELOAD of
  jemalloc with MALLOC_CONF=narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1, which never gives
  freed memory back either; but freed blocks that the next allocations cannot reuse stay in memory too:
  peak RSS up to 1.7x that with huge pages in the lever's run, and varying from run to run (ViT-B/16:
  6.9 to 17.7 GB in four runs, against 6.4; lever jemalloc and docs/performance.md). jemalloc's default
  decay gives memory back after seconds, and the faults stay (lever jemalloc_default_decay).

TOKENLEARNER_ALLOCATOR=system runs with the environment as it is. An LD_PRELOAD that already loads
jemalloc is left alone, and so is each tunable GLIBC_TUNABLES already names, which is also what stops
the re-executed process from re-executing again.
"""

import ctypes.util
import os
import sys
from typing import Callable, Mapping, Optional

CHOICES = ("auto", "jemalloc", "system")
HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
# No mmap'ed blocks in the main heap, and a trim threshold no heap reaches: freed memory stays.
KEEP_FREED_TUNABLES = (("glibc.malloc.mmap_max", "0"), ("glibc.malloc.trim_threshold", str(2 ** 62)))
JEMALLOC_CONF = "narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


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


def glibc_tunables(environ: Mapping[str, str], thp_mode_file: str = THP_MODE_FILE,
                   libc: Optional[tuple] = None) -> Optional[str]:
    """The GLIBC_TUNABLES value that keeps freed memory in the main heap (glibc 2.26 or later) and asks
    for huge pages (glibc 2.35 or later, where the kernel gives them only on request), keeping the
    tunables already set and leaving each one they name as it is; None where that would change nothing."""
    libc = libc or glibc_version()
    if libc is None or libc < (2, 26):
        return None
    current = environ.get("GLIBC_TUNABLES", "")
    named = {item.partition("=")[0] for item in current.split(":")}
    wanted = dict(KEEP_FREED_TUNABLES)
    if libc >= (2, 35) and _huge_pages_on_request(thp_mode_file):
        wanted[HUGETLB_TUNABLE] = "1"
    added = [f"{name}={value}" for name, value in wanted.items() if name not in named]
    return ":".join(filter(None, [current, *added])) if added else None


def _huge_pages_on_request(thp_mode_file: str) -> bool:
    """Whether the kernel gives transparent huge pages only to memory that asks for them."""
    try:
        with open(thp_mode_file, encoding="ascii") as f:
            return "[madvise]" in f.read()
    except OSError:
        return False


def environment(environ: Mapping[str, str] = os.environ, jemalloc: Callable[[], Optional[str]] = find_jemalloc,
                thp_mode_file: str = THP_MODE_FILE, libc: Optional[tuple] = None) -> dict:
    """The environment variables to set for the allocator TOKENLEARNER_ALLOCATOR picks; {} where the
    process runs as it should already. Raises ValueError for a choice that cannot be honoured."""
    choice = environ.get("TOKENLEARNER_ALLOCATOR", "auto") or "auto"
    if choice not in CHOICES:
        raise ValueError(f"TOKENLEARNER_ALLOCATOR={choice!r}: expected one of {', '.join(CHOICES)}")
    preload = environ.get("LD_PRELOAD", "")
    if choice == "system" or "jemalloc" in preload:
        return {}
    if choice == "jemalloc":
        library = jemalloc()
        if not library:
            raise ValueError("TOKENLEARNER_ALLOCATOR=jemalloc: the dynamic loader finds no libjemalloc; "
                             "install it (apt install libjemalloc2) or unset the variable")
        return {"LD_PRELOAD": " ".join(filter(None, [preload, library])),
                "MALLOC_CONF": environ.get("MALLOC_CONF") or JEMALLOC_CONF}
    tunables = glibc_tunables(environ, thp_mode_file, libc)
    return {"GLIBC_TUNABLES": tunables} if tunables else {}


def run_cpu_programs_inline() -> None:
    """Has jax run single-device CPU programs on the thread that calls them instead of dispatching them
    to a thread of its own, so that XLA's temporary buffer is malloc'ed and freed in glibc's main heap,
    which the default tunables keep in memory. Call it before any device is used; other backends ignore it."""
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)


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
