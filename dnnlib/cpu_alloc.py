"""Keep freed memory in the process on Linux/glibc, so that CPU training does not page-fault its tensors in anew.

glibc's malloc serves every request above its mmap threshold (128 KiB, adapting up to 32 MiB) with fresh pages
from the kernel and gives them back on free; memory freed at the top of the heap beyond the trim threshold goes
back too. A training step allocates and frees the same few-MiB activations hundreds of times, so by default the
kernel zero-fills them again on every step: on the 2-core development machine the Quickstart-sized GANformer step
(32x32, channel base 2048 / max 64, batch 32, fp32) took about a million minor page faults and 2.6 s of system
time over a benchmark run (start-up, 2 warm-up steps, one 16-step period), against 0.23 million and 0.7 s with
the settings below (whole-process figures of
`/usr/bin/time -f "%e %U %S %R" python bench/bench_train.py --preset GANformer --resolution 32 --batch 32
--batch-gpu 32 --channel-base 2048 --channel-max 64 --dtype fp32 --periods 1 --warmup-steps 2`, run with and
without them in turn: median wall-time ratio 0.90).

The settings raise the mmap threshold to glibc's largest (32 MiB) and the trim threshold to 1 GiB: freed blocks
stay in the heap for the next step. The process keeps up to that much freed memory instead of returning it.
Other C libraries (or an allocator preloaded in their place) are left alone. GPU tensors are unaffected.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform
import sys

MMAP_THRESHOLD = 32 << 20       # glibc refuses larger values (HEAP_MAX_SIZE / 2 on 64-bit)
TRIM_THRESHOLD = 1 << 30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # mallopt parameter numbers in glibc's malloc.h

_done: bool | None = None


def glibc_version() -> tuple[int, int] | None:
    """(major, minor) of the C library where it is glibc on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    name, version = platform.libc_ver()
    if name != "glibc":
        return None
    try:
        major, minor = (int(v) for v in version.split(".")[:2])
    except ValueError:
        return None
    return major, minor


def keep_freed_memory() -> bool:
    """Apply the settings once per process; True where glibc accepted them, False where it is not glibc."""
    global _done
    if _done is None:
        _done = False
        if glibc_version() is not None:
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                mallopt = libc.mallopt
                mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
                _done = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
            except (OSError, AttributeError):      # musl and others have no mallopt
                _done = False
    return _done


__all__ = ["glibc_version", "keep_freed_memory"]
