"""Loads the compiled module ``sparsekernels._C`` without ever failing import.

A missing or broken build leaves ``C`` as None with the reason in
``load_error``; the reference and Triton backends keep working.
"""
from __future__ import annotations

import warnings
from typing import Optional

import torch

C = None
load_error: Optional[str] = None

try:
    from . import _C as C  # noqa: N812
except ImportError as exc:  # pragma: no cover - depends on the build
    load_error = str(exc)
    warnings.warn(
        f"sparsekernels: compiled kernels unavailable ({exc}); only the 'reference' and "
        "'triton' backends will work. Build with `pip install --no-build-isolation -e .`",
        stacklevel=2,
    )

if C is not None and C.with_cuda and torch.version.cuda and C.cuda_version != torch.version.cuda:
    warnings.warn(
        f"sparsekernels was built for CUDA {C.cuda_version} but torch uses CUDA "
        f"{torch.version.cuda}; rebuild with `pip install --no-build-isolation -e .`",
        stacklevel=2,
    )


def has_cpu_kernels() -> bool:
    return C is not None


def has_cuda_kernels() -> bool:
    return C is not None and bool(C.with_cuda)
