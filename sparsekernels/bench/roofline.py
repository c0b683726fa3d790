"""Ideal speed-up of a sparse conv over the dense one, from a roofline
(``shared/research/perf_anchors.md`` sec. 3), and the machine peaks it needs.

A conv pass (forward, grad-input or grad-weight) computes ``F`` FLOP, moves
``A`` activation bytes (one tensor read, one written: x and y, or their
gradients) and touches ``W`` weight bytes. On a machine with peak ``P`` FLOP/s
and bandwidth ``B`` its ideal time is ``max(F / P, (A + W) / B)``. Pruning to
density ``d`` (kept fraction of the weights) scales ``F`` and ``W`` by ``d``,
the sparse weight costing 25% extra for its indices (sec. 3.2); ``A`` does not
shrink, which caps memory-bound layers below the naive ``1 / d``. The three
passes have the same ``F``, ``A`` and ``W``, so every pass (and all three
together) has the same ideal speed-up.

``P`` and ``B`` are measured here, not taken from a datasheet: a dense matmul
at the benchmark's dtype (strict fp32, no TF32, as the sparse kernels compute)
and a large device-memory copy.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from .suites import Layer
from .timing import median_ms

SPARSE_WEIGHT_OVERHEAD = 1.25  # index bytes on top of the kept values (sec. 3.2)
_MATMUL_TARGET_MS = 20.0  # grow the matmul until one call takes this long...
_MATMUL_MAX = {"cpu": 4096, "cuda": 16384}  # ...or reaches this size
_COPY_BYTES = {"cpu": 256 << 20, "cuda": 1 << 30}


class Machine(NamedTuple):
    peak_tflops: Optional[float]  # None when the dtype has no matmul on the device
    bandwidth_gbs: float


def conv_flop(layer: Layer, batch: int) -> int:
    """FLOP (2 x MACs) of one dense conv pass."""
    return 2 * batch * layer.cout * layer.cin * layer.k ** 2 * layer.out_hw ** 2


def ideal_speedup(layer: Layer, batch: int, itemsize: int, density: float,
                  machine: Machine) -> Optional[float]:
    """Roofline-ideal dense time / sparse time of one pass at weight ``density``."""
    if machine.peak_tflops is None or density <= 0:
        return None
    flop = conv_flop(layer, batch)
    act = itemsize * batch * (layer.cin * layer.hw ** 2 + layer.cout * layer.out_hw ** 2)
    weight = itemsize * layer.cout * layer.cin * layer.k ** 2
    peak, bandwidth = machine.peak_tflops * 1e12, machine.bandwidth_gbs * 1e9

    def ideal_s(flop_scale: float, weight_bytes: float) -> float:
        return max(flop * flop_scale / peak, (act + weight_bytes) / bandwidth)

    sparse = ideal_s(density, weight * density * SPARSE_WEIGHT_OVERHEAD)
    return ideal_s(1.0, weight) / sparse


def _peak_tflops(device: torch.device, dtype: torch.dtype) -> Optional[float]:
    strict = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        size = 256
        while True:
            a, b = (torch.randn(size, size, device=device).to(dtype) for _ in range(2))
            ms = median_ms({0: lambda: torch.mm(a, b)}, device, warmup=1, repeat=3)[0]
            if ms >= _MATMUL_TARGET_MS or size >= _MATMUL_MAX[device.type]:
                break
            size *= 2
        ms = median_ms({0: lambda: torch.mm(a, b)}, device, warmup=0, repeat=5)[0]
        return 2 * size ** 3 / (ms * 1e-3) / 1e12
    except RuntimeError:  # e.g. no half-precision matmul on this CPU build
        return None
    finally:
        torch.backends.cuda.matmul.allow_tf32 = strict


def _bandwidth_gbs(device: torch.device) -> float:
    elems = _COPY_BYTES[device.type] // 4
    src = torch.ones(elems, device=device)
    dst = torch.empty_like(src)
    ms = median_ms({0: lambda: dst.copy_(src)}, device, warmup=1, repeat=5)[0]
    return 2 * elems * 4 / (ms * 1e-3) / 1e9  # read + write


def measure_machine(device: torch.device, dtype: torch.dtype) -> Machine:
    """Measured matmul peak at ``dtype`` and copy bandwidth of ``device``."""
    return Machine(_peak_tflops(device, dtype), _bandwidth_gbs(device))


def fraction(value: Optional[float], of: Optional[float]) -> Optional[float]:
    """value / of, None when either is missing (or of is 0 / not finite)."""
    if value is None or not of or not math.isfinite(of):
        return None
    return value / of
