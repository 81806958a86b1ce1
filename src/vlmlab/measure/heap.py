"""The measured peak of CPU memory while a function runs: glibc's heap in use, sampled after every aten op.

What the memory pre-flight's estimates are checked against (`tests/test_memory_preflight.py`,
`benchmarks/bench_memory_preflight.py`). CPU tensors are allocated from the C heap (large ones mmapped),
so `mallinfo2`'s in-use bytes see every tensor; sampling after each op under a dispatch mode (which also
sees the backward's ops) catches the peak between module boundaries. Linux with glibc only.
"""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Callable

from torch.utils._python_dispatch import TorchDispatchMode


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
        + ("keepcost",)
    ]


try:
    _libc = ctypes.CDLL("libc.so.6")
    _libc.mallinfo2.restype = _MallInfo2
except (OSError, AttributeError):  # not glibc
    _libc = None


def available() -> bool:
    return _libc is not None


def heap_in_use() -> int:
    """Bytes of the C heap in use: small blocks plus mmapped large ones."""
    info = _libc.mallinfo2()
    return info.uordblks + info.hblkhd


class _PeakSampler(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.peak = heap_in_use()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.peak = max(self.peak, heap_in_use())
        return out


def peak_growth(fn: Callable[[], object]) -> int:
    """How far the heap in use rose above its level at the start while `fn()` ran (bytes)."""
    gc.collect()
    base = heap_in_use()
    with _PeakSampler() as sampler:
        fn()
    return max(sampler.peak, heap_in_use()) - base
