"""Which backend runs an op: names, availability, and ``"auto"`` resolution.

Backends are modules exposing the same three functions (``forward``,
``grad_input``, ``grad_weight``); each sparsity kind maps backend names to its
modules, imported lazily so that a missing Triton costs nothing.
"""
from __future__ import annotations

import importlib
import os

import torch

from .. import _ext

BACKENDS = ("auto", "cpu", "cuda", "triton", "reference")


def triton_available() -> bool:
    try:
        importlib.import_module("triton")
    except ImportError:
        return False
    return True


def _triton_runs_on(device: torch.device) -> bool:
    # Off the GPU, Triton kernels run only under the interpreter.
    return device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"


def resolve(backend: str, device: torch.device) -> str:
    """The concrete backend for tensors on ``device``; raises if unusable."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        if device.type == "cpu":
            return "cpu" if _ext.has_cpu_kernels() else "reference"
        if device.type == "cuda":
            if _ext.has_cuda_kernels():
                return "cuda"
            return "triton" if triton_available() else "reference"
        return "reference"
    if backend == "cpu":
        if device.type != "cpu":
            raise ValueError(f"backend: 'cpu' needs tensors on the CPU, got {device}")
        if not _ext.has_cpu_kernels():
            raise RuntimeError(f"backend 'cpu': compiled kernels unavailable ({_ext.load_error})")
    elif backend == "cuda":
        if device.type != "cuda":
            raise ValueError(f"backend: 'cuda' needs CUDA tensors, got {device}")
        if not _ext.has_cuda_kernels():
            raise RuntimeError("backend 'cuda': sparsekernels was built without CUDA kernels")
    elif backend == "triton":
        if not triton_available():
            raise RuntimeError("backend 'triton': triton is not installed")
        if not _triton_runs_on(device):
            raise ValueError(
                f"backend: 'triton' needs CUDA tensors (or TRITON_INTERPRET=1), got {device}"
            )
    return backend


def module_for(table: dict[str, str], backend: str):
    """Import the backend module named in a kind's ``table``."""
    return importlib.import_module(table[backend], package="sparsekernels")


# The compiled CPU kernels take float32/float64; half-precision inputs run
# there in float32 (the fp32 accumulation the CUDA kernels use) and are cast
# back by the native backends.
_CPU_NATIVE = (torch.float32, torch.float64)


def native_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype a native (``_C``) kernel computes ``t``'s pass in."""
    return t.dtype if (t.is_cuda or t.dtype in _CPU_NATIVE) else torch.float32


def cast(t, dtype):
    """``t`` in ``dtype``; None stays None (an absent bias). Checks the dtype
    first: ``Tensor.to`` costs microseconds even when it returns ``t``."""
    return t if t is None or t.dtype == dtype else t.to(dtype)
