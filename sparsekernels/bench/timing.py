"""Interleaved median timing of several callables on one device.

All callables of one comparison are timed round-robin, the order rotated every
repeat, so clock or thermal drift and cache state hit dense and sparse alike.
CPU: ``time.perf_counter`` around one call. CUDA: events around a burst of
back-to-back calls sized to ~1 ms, so host launch overhead hides behind the GPU
work as it does in a real network.

Inputs are not reused call after call: :func:`rotating` cycles each callable
through several input sets, :func:`rotation_sets` of them, together about
twice the last-level cache, so no call finds its input still cached from the
previous one (which would flatter small layers).
"""
from __future__ import annotations

import itertools
import math
import statistics
import time
from typing import Callable, Hashable, Sequence

import torch

_CUDA_BURST_MS = 1.0
_CUDA_MAX_BURST = 100
_MIN_SETS, _MAX_SETS = 2, 64


def rotation_sets(set_bytes: int, cache_bytes: int) -> int:
    """How many input sets of ``set_bytes`` to cycle through."""
    wanted = math.ceil(2 * cache_bytes / max(set_bytes, 1))
    return min(_MAX_SETS, max(_MIN_SETS, wanted))


def rotating(calls: Sequence[Callable[[], object]]) -> Callable[[], object]:
    """One callable that runs the next of ``calls`` (one per input set) each time."""
    cycle = itertools.cycle(calls)
    return lambda: next(cycle)()


def _cpu_ms(fn: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - start) * 1e3 / calls


def _cuda_ms(fn: Callable[[], object], calls: int) -> float:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(calls):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / calls


def median_ms(
    fns: dict[Hashable, Callable[[], object]], device: torch.device, warmup: int, repeat: int
) -> dict[Hashable, float]:
    """Median milliseconds per call of each callable, measured interleaved."""
    names = list(fns)
    timer = _cuda_ms if device.type == "cuda" else _cpu_ms
    for _ in range(warmup):
        for name in names:
            fns[name]()
    calls = {name: 1 for name in names}
    if device.type == "cuda":  # size each burst from one (warm) call
        for name in names:
            est = timer(fns[name], 1)
            calls[name] = min(_CUDA_MAX_BURST, max(1, math.ceil(_CUDA_BURST_MS / max(est, 1e-3))))
    samples: dict[Hashable, list[float]] = {name: [] for name in names}
    for r in range(repeat):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timer(fns[name], calls[name]))
    return {name: statistics.median(s) for name, s in samples.items()}
