"""Keep freed CPU memory for reuse: the allocator setting of CPU inference.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves a
block above its mmap threshold (dynamic, at most 32 MiB) with a fresh
``mmap`` and unmaps it on free, so every forward of a network with such
activations (MobileNet-V2 at batch 8: a 38 MiB one) page-faults them in
again: the kernel zeroes every 4 KiB page on its first touch, inside the
conv that writes it. ONNX Runtime keeps its own arena and never pays this;
PyTorch's tuning guide points at jemalloc or tcmalloc for the same reason.
:func:`keep_freed_memory` is glibc's own equivalent, set at run time.
"""
from __future__ import annotations

import ctypes
import platform

# glibc's <malloc.h> parameters.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Largest value mallopt accepts for either: an int.
_INT_MAX = 2**31 - 1
# The cap some glibc versions put on the mmap threshold (half their heap size).
_GLIBC_MMAP_MAX = 32 << 20


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve large blocks from its heap and keep freed
    memory there for reuse (``mallopt``: mmap threshold up to 2 GiB, no
    trimming), so a forward reuses the pages of the one before instead of
    faulting fresh ones in. Process-wide and not undone: the process keeps
    its peak heap, as a caching allocator does. False (nothing changed)
    where the C library is not glibc; True where the mmap threshold was
    raised."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    raised = any(mallopt(_M_MMAP_THRESHOLD, size) for size in (_INT_MAX, _GLIBC_MMAP_MAX))
    if raised:
        mallopt(_M_TRIM_THRESHOLD, _INT_MAX)
    return raised
