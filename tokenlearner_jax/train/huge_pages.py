"""Transparent huge pages for XLA's buffers: main.py re-executes itself once, at start, with glibc's
malloc asking the kernel for huge pages (GLIBC_TUNABLES=glibc.malloc.hugetlb=1).

XLA's CPU runtime mallocs a program's temporary buffer (about 2 GB for ViT-S/16's train step at batch
16) at every call and frees it after. glibc hands a block that large out as a fresh mmap and gives it
back with munmap, so every step faults its temporary memory in again, one 4 KiB page at a time: 516k
page faults and 1.2 s of system time per ViT-S/16 step (of 7.5 CPU s) on an AMD EPYC with 2 cores.
Where the kernel gives huge pages only to memory that asks for them (`madvise` in
/sys/kernel/mm/transparent_hugepage/enabled, the default of many distributions), glibc 2.35 or later asks
for them with this tunable: 2k faults and 0.3 s per step, the same peak RSS (lever huge_pages in
experiments/results/levers.md). glibc reads its tunables only when a process starts, hence the
re-execution. timm's steps fault far less without it (PyTorch frees tensors as the step goes) and
gain a little from it too (docs/performance.md).

A GLIBC_TUNABLES that already names glibc.malloc.hugetlb is left alone: `GLIBC_TUNABLES=glibc.malloc.hugetlb=0`
turns this off.
"""

import os
import sys
from typing import Mapping, Optional

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = "/sys/kernel/mm/transparent_hugepage/enabled"


def glibc_version() -> Optional[tuple]:
    """(major, minor) of the C library this process runs on, or None where it is not glibc."""
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()
    except (AttributeError, ValueError, OSError):
        return None
    return tuple(int(part) for part in version.split(".")[:2]) if name == "glibc" else None


def tunables(environ: Mapping[str, str] = os.environ, thp_mode_file: str = THP_MODE_FILE,
             libc: Optional[tuple] = None) -> Optional[str]:
    """The GLIBC_TUNABLES value that asks for huge pages, keeping any tunables already set; None where it
    would change nothing or is not ours to set: not glibc 2.35 or later, the kernel gives huge pages to
    all memory or to none, or GLIBC_TUNABLES already names glibc.malloc.hugetlb."""
    current = environ.get("GLIBC_TUNABLES", "")
    if TUNABLE in current:
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
    return ":".join(filter(None, [current, f"{TUNABLE}=1"]))


def reexec_with_huge_pages() -> None:
    """Replaces this process by the same command with huge pages asked for, where `tunables` says that
    changes something; else returns. Call it first, before anything is printed or started."""
    value = tunables()
    if value is None or not sys.executable or not getattr(sys, "orig_argv", None):
        return
    os.environ["GLIBC_TUNABLES"] = value
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
