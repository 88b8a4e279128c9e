"""dnnlib/cpu_alloc.py: on glibc, tensors of a few MiB come from the heap and their memory stays there when freed."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dnnlib import cpu_alloc

# In a fresh process: bytes glibc serves as separate mappings (mallinfo2's hblkhd) while an 8 MiB tensor is
# alive, and how much the heap grew by it, measured after it is freed. glibc's default maps such a block on its own and unmaps it on
# free (its first mmap threshold is 128 KiB), so every step would fault its pages in anew.
_PROBE = textwrap.dedent("""
    import ctypes, sys, torch
    from dnnlib.cpu_alloc import keep_freed_memory

    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    if sys.argv[1] == "on":
        assert keep_freed_memory()
    heap = libc.mallinfo2().arena
    x = torch.ones(2 << 20)             # 8 MiB
    mapped = libc.mallinfo2().hblkhd
    del x
    print(mapped >= 8 << 20, libc.mallinfo2().arena - heap >= 8 << 20)
""")


def _probe(mode: str) -> tuple[bool, bool]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1])).stdout.split()
    return out[0] == "True", out[1] == "True"


@pytest.mark.skipif((cpu_alloc.glibc_version() or (0, 0)) < (2, 33), reason="needs glibc >= 2.33 (mallinfo2)")
def test_tensors_come_from_the_heap_and_stay_there():
    assert _probe("off") == (True, False)   # default: the tensor is its own mapping, gone when freed
    assert _probe("on") == (False, True)    # set: served from the heap, which keeps the memory after the free


def test_applies_once_and_reports_the_same():
    first = cpu_alloc.keep_freed_memory()
    assert cpu_alloc.keep_freed_memory() is first
    assert first == (cpu_alloc.glibc_version() is not None)
