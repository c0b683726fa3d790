"""What every kind's Triton backend shares: the interpreter switch and its
lock, the accumulator dtype of each input dtype, the launcher that runs one
fixed config under the interpreter and autotunes on a GPU, host-side
operand checks and grid helpers, and the NaN/Inf protocol of the dot
kernels that would otherwise read pruned weights (below)."""
from __future__ import annotations

import os
import threading

import torch
import triton
import triton.language as tl

from ..conv_args import ConvArgs

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_INTERPRETER_LOCK = threading.Lock()

_ACC = {
    torch.float16: tl.float32,
    torch.bfloat16: tl.float32,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}


class _Launcher:
    """``kernel[grid](...)`` with one fixed config under the interpreter and
    ``triton.autotune`` over ``configs`` on a GPU. ``configs[0]`` is the
    interpreter's. No kernel accumulates into its output (every element is
    stored once), so autotuning's repeated launches are harmless."""

    def __init__(self, kernel, configs: list, key: list[str]):
        if _INTERPRET:
            self._fn, self._fixed = kernel, dict(configs[0].kwargs)
        else:
            self._fn, self._fixed = triton.autotune(configs=configs, key=key)(kernel), {}

    def __call__(self, grid, *args, **kwargs):
        if _INTERPRET:
            # The interpreter patches triton.language globally while a kernel
            # runs, so two threads interpreting at once corrupt each other.
            with _INTERPRETER_LOCK:
                self._fn[grid](*args, **kwargs, **self._fixed)
        else:
            self._fn[grid](*args, **kwargs, **self._fixed)


def _cfg(num_warps: int, num_stages: int = 2, **meta) -> triton.Config:
    return triton.Config(meta, num_warps=num_warps, num_stages=num_stages)


def _check(name: str, t: torch.Tensor, dtype: torch.dtype):
    if t.dtype not in _ACC:
        raise TypeError(
            f"{name}: dtype {t.dtype} is not supported by the Triton backend "
            f"(float16, bfloat16, float32, float64)"
        )
    if t.dtype != dtype:
        raise TypeError(f"{name}: dtype {t.dtype} does not match {dtype}")
    if _INTERPRET and t.dtype == torch.bfloat16:
        # numpy has no bfloat16, so the interpreter computes garbage with it.
        raise TypeError(
            f"{name}: bfloat16 does not run under the Triton interpreter "
            "(TRITON_INTERPRET=1); use float16/float32, or a GPU"
        )
    if t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D NCHW tensor, got shape {tuple(t.shape)}")


def _grid(programs: int, extent: int, tile: str):
    """(programs, tiles of ``extent``) with the tile size the config picked."""
    return lambda meta: (programs, triton.cdiv(extent, meta[tile]))


def _conv_scalars(conv: ConvArgs) -> tuple:
    return (*conv.stride, *conv.padding, *conv.dilation)


# ---------------------------------------------------------------------------
# NaN/Inf: "pruned weights do not exist". A kernel whose tl.dot tile holds a
# pruned position as a zero computes 0 * NaN = NaN when the other operand
# (x, or grad_out) is not finite there, leaking a value only pruned weights
# read. Such a kernel takes a device flag (``_nonfinite`` of that operand,
# no host sync) and an ``EXACT`` constexpr, and is launched twice
# (``_launch_dot_or_exact``): the dot variant does the work when the flag is
# clear, the exact one (adding only kept products: ``tl.where``, never
# ``0 *``) when it is set; the other launch's programs read the flag
# (``_flag_picks``) and store nothing. Two launches, not a branch in one
# kernel, so the dot kernel carries no registers for the exact path.
# ---------------------------------------------------------------------------
def _nonfinite(t: torch.Tensor) -> torch.Tensor:
    """int32 ``[1]`` on ``t``'s device: 1 if ``t`` holds a NaN/Inf (no sync)."""
    return (~torch.isfinite(t)).any().reshape(1).to(torch.int32)


@triton.jit
def _flag_picks(flag_ptr, offs, EXACT: tl.constexpr):
    """``(run, run_any)``: whether this launch (``EXACT`` or not) is the one
    the flag picks, per element of ``offs`` (a store mask of its shape: the
    interpreter rejects a scalar one) and as one scalar (loop bounds: the
    unpicked launch does no work). One scalar load, broadcast: loading the
    flag per element cost stripe's forward 16 registers on sm_90 (and its
    128x128 config a spill)."""
    flag = tl.load(flag_ptr)
    if EXACT:
        run = flag != 0
    else:
        run = flag == 0
    return (offs * 0 + run.to(tl.int32)) != 0, run


def _launch_dot_or_exact(dot: _Launcher, exact: _Launcher, grid, *args, **kwargs):
    """Both variants of a flag-taking kernel; the device flag in ``args``
    picks the one that stores."""
    dot(grid, *args, **kwargs, EXACT=False)
    exact(grid, *args, **kwargs, EXACT=True)
