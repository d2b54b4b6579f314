"""The memory allocator main.py runs under: glibc's malloc asking for transparent huge pages, or,
when asked for, jemalloc set to keep freed memory. main.py re-executes itself once, at start, with the
environment that picks it (the dynamic loader and glibc read it only when a process starts).

Why: XLA's CPU runtime mallocs a program's temporary buffer (about 2 GB for ViT-S/16's train step at
batch 16, 4 GB for ViT-B/16's) at every call and frees it after. glibc hands a block that large out as
a fresh mmap and gives it back with munmap, so every step faults its temporary memory in again, one
4 KiB page at a time, and the kernel zeroes each page: 516k page faults and 1.2 s of system time per
ViT-S/16 step (of 7.5 CPU s) on an AMD EPYC with 2 cores.

- By default, where the kernel gives huge pages only to memory that asks for them (`madvise` in
  /sys/kernel/mm/transparent_hugepage/enabled, the default of many distributions), glibc 2.35 or later
  asks for them with GLIBC_TUNABLES=glibc.malloc.hugetlb=1: the buffer is faulted in 2 MiB at a time,
  though still zeroed at every call; the same peak memory (lever huge_pages in
  experiments/results/levers.md).
- TOKENLEARNER_ALLOCATOR=jemalloc (`apt install libjemalloc2` on Debian and Ubuntu): LD_PRELOAD of
  jemalloc with MALLOC_CONF=narenas:1,thp:always,dirty_decay_ms:-1,muzzy_decay_ms:-1, which never gives
  freed memory back, so the next call gets the same, already faulted-in buffer: few or no page faults
  left in a step, and train steps 1.08-1.35x as fast as with huge pages; but freed blocks that the
  next allocations cannot reuse stay in memory too: peak RSS up to 1.7x that with huge pages in the
  lever's run, and varying from run to run (ViT-B/16: 6.9 to 17.7 GB in four runs, against 6.4;
  lever jemalloc and docs/performance.md).
  jemalloc's default decay gives memory back after seconds, and the faults stay (lever
  jemalloc_default_decay). For machines with memory to spare.

Whatever the allocator, the trainer calls `release_free_memory` after each compilation: XLA's compiler
frees hundreds of MB to 2 GB (MaxViT-T's train step) that glibc keeps in its heaps, and every step's
temporary buffer would be allocated on top of it (lever release_compile_memory).

TOKENLEARNER_ALLOCATOR=system runs with the environment as it is. An LD_PRELOAD that already loads
jemalloc, or a GLIBC_TUNABLES that already names glibc.malloc.hugetlb, is left alone, which is also
what stops the re-executed process from re-executing again.
"""

import ctypes.util
import os
import sys
from typing import Callable, Mapping, Optional

CHOICES = ("auto", "jemalloc", "system")
HUGETLB_TUNABLE = "glibc.malloc.hugetlb"
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
    tunables = huge_page_tunables(environ, thp_mode_file, libc)
    return {"GLIBC_TUNABLES": tunables} if tunables else {}


def release_free_memory() -> None:
    """Gives the memory malloc holds free back to the system (glibc's malloc_trim(0), which also releases
    free pages inside its heaps); does nothing where the C library is not glibc."""
    if glibc_version() is not None:
        ctypes.CDLL(None).malloc_trim(0)


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
