"""``serve.memory.steady_memory``: after it, large buffers are mmap-ed (and returned on free) even after
glibc would have raised its threshold, which is what kept the server's memory steady under batches of
every size (benchmarks/bench_serve.py)."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent("""
    import ctypes, ctypes.util, sys
    import numpy as np
    from geoscope.serve.memory import steady_memory

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                   "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.mallinfo2.restype = MallInfo2
    if sys.argv[1] == "steady":
        assert steady_memory()
    big = np.ones(8 << 20, dtype=np.uint8)  # 8 MiB: mmap-ed; freeing it raises glibc's dynamic threshold
    del big
    before = libc.mallinfo2().hblkhd
    mid = np.ones(4 << 20, dtype=np.uint8)  # 4 MiB: from the heap if the threshold moved, mmap-ed if fixed
    print(libc.mallinfo2().hblkhd - before >= (4 << 20))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux") or not ctypes.util.find_library("c"),
                    reason="glibc's mallopt and mallinfo2 exist on Linux only")
def test_large_buffers_stay_mmapped_after_steady_memory():
    def run(mode: str) -> str:
        out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, timeout=120)
        if "mallinfo2" in out.stderr and "undefined symbol" in out.stderr:
            pytest.skip("this C library has no mallinfo2 (glibc older than 2.33)")
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    assert run("default") == "False"  # glibc's dynamic threshold: the 4 MiB buffer came from the heap
    assert run("steady") == "True"
