"""What every kind's Triton backend shares: the interpreter switch and its
lock, the accumulator dtype of each input dtype, the launcher that runs one
fixed config under the interpreter and autotunes on a GPU (and the config
lists the stripe and pattern kernels, alike in tiling, search), host-side
operand checks, outputs and grids, the in-kernel index arithmetic of a
conv (pixels, taps, group tiles), and the NaN/Inf protocol of the dot
kernels that would otherwise read pruned weights (below).

The ``@triton.jit`` helpers are inlined into their callers (no call). ptxas
allocates registers by the order of the ops it gets, so they keep the order
and association of the arithmetic they replace: every kernel compiles to the
same registers and spills on sm_90 as when written out
(../shared/tools/triton_sm90_report.py)."""
from __future__ import annotations

import os
import threading

import torch
import triton
import triton.language as tl

from ..conv_args import ConvArgs, output_hw

_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
_INTERPRETER_LOCK = threading.Lock()

_ACC = {
    torch.float16: tl.float32,
    torch.bfloat16: tl.float32,
    torch.float32: tl.float32,
    torch.float64: tl.float64,
}


class _Launcher:
    """``kernel[grid](...)``: on a GPU, ``triton.autotune`` over the configs
    of the call's dtype; under the interpreter one fixed config, the first
    of ``wide`` (the smallest tiles: tests cross more tile edges). ``configs`` are for fp16/bf16,
    whose dots lower to wgmma only with M tiles of 64 or more; ``wide`` (by
    default the same) for fp32/fp64, whose 4- and 8-byte accumulators and
    FMA/DMMA dots spill at tiles fp16 fits. No kernel accumulates into its
    output (every element is stored once), so autotuning's repeated launches
    are harmless."""

    def __init__(self, kernel, configs: list, key: list[str], *, wide: list = None,
                 fits=None):
        # kernel, key and configs_for stay readable: benchmarks/triton_sm90.py
        # compiles every config the library can launch.
        self.kernel, self.key = kernel, key
        self._narrow, self._wide = configs, wide or configs
        # fits(config kwargs, constexprs) -> bool: drops a config for the
        # launches (e.g. a layout and N) where it spills on sm_90.
        self._fits = fits
        if _INTERPRET:
            self._fn, self._fixed = kernel, dict(self._wide[0].kwargs)
        else:
            every = configs + [c for c in self._wide if all(c is not d for d in configs)]
            self._fn = triton.autotune(configs=every, key=key,
                                       prune_configs_by={"early_config_prune": self._prune})(kernel)
            self._fixed = {}

    def configs_for(self, dtype: torch.dtype, **constexprs) -> list:
        """The configs a call in ``dtype`` with these constexpr arguments
        autotunes over (all of the dtype's when none is given)."""
        configs = self._narrow if dtype.itemsize <= 2 else self._wide
        if self._fits is None or not constexprs:
            return configs
        return [c for c in configs if self._fits(c.kwargs, constexprs)]

    def _prune(self, configs, named_args, **kwargs):
        # The data dtype is the first floating tensor's (flags are int32;
        # Triton's autotuner keys its cache on every argument's dtype too);
        # kwargs are the call's constexprs.
        dtype = next(a.dtype for a in named_args.values()
                     if isinstance(a, torch.Tensor) and a.is_floating_point())
        return self.configs_for(dtype, **kwargs)

    def __call__(self, grid, *args, **kwargs):
        if _INTERPRET:
            # The interpreter patches triton.language globally while a kernel
            # runs, so two threads interpreting at once corrupt each other.
            with _INTERPRETER_LOCK:
                self._fn[grid](*args, **kwargs, **self._fixed)
            return
        # Triton launches on the current CUDA device, not the tensors': make
        # the first tensor argument's device current (a cuda:1 tensor under a
        # current cuda:0 would otherwise run in the wrong context).
        device = next(a.device for a in args if isinstance(a, torch.Tensor))
        with torch.cuda.device(device):
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


# Stripe and pattern tile alike: an output (or grad-input) tile is channels
# of one group x pixels, a grad-weight tile is one column (group, tap) x
# output-side rows x input channels. They search the same configs where
# their kernels share a tile structure; their grad-input tiles differ in K
# (a column's stripes vs output channels), so each keeps its own list.
# fp16/bf16: M tiles of 64+ (wgmma on sm_90; smaller ones lower to
# mma.sync), none spilling; fp32/fp64: small tiles (the fp16 ones spill at
# 255 registers there). benchmarks/results/gpu-sm90/triton_sm90.json has
# every config's registers and spills.
_CHANNEL_PIXEL_CONFIGS = dict(  # forward dot: BLOCK_O channels x BLOCK_P pixels
    configs=[_cfg(4, 3, BLOCK_O=64, BLOCK_P=64, BLOCK_K=32),
             _cfg(8, 3, BLOCK_O=64, BLOCK_P=128, BLOCK_K=32),
             _cfg(8, 3, BLOCK_O=128, BLOCK_P=128, BLOCK_K=32)],
    wide=[_cfg(4, 2, BLOCK_O=16, BLOCK_P=64, BLOCK_K=16),
          _cfg(4, 2, BLOCK_O=16, BLOCK_P=128, BLOCK_K=16),
          _cfg(4, 2, BLOCK_O=32, BLOCK_P=64, BLOCK_K=16)])
# The exact (NaN/Inf) forward: one config, large tiles, so that when x is
# finite its programs (which only read the flag) are few.
_CHANNEL_PIXEL_EXACT_CONFIGS = dict(configs=[_cfg(8, BLOCK_O=32, BLOCK_P=128, BLOCK_K=16)])


def _column_configs(rows: str) -> dict:
    """Grad-weight configs: ``rows`` (the tile's output-side rows: a
    column's stripes, or output channels) x BLOCK_C input channels,
    reduced over BLOCK_P pixels per step."""
    return dict(configs=[_cfg(4, 3, **{rows: 64}, BLOCK_C=64, BLOCK_P=64),
                         _cfg(8, 3, **{rows: 64}, BLOCK_C=32, BLOCK_P=128),
                         _cfg(8, 3, **{rows: 128}, BLOCK_C=64, BLOCK_P=64)],
                wide=[_cfg(4, 2, **{rows: 16}, BLOCK_C=16, BLOCK_P=64),
                      _cfg(4, 2, **{rows: 32}, BLOCK_C=32, BLOCK_P=64),
                      _cfg(4, 2, **{rows: 16}, BLOCK_C=64, BLOCK_P=64)])


_GRID_YZ_MAX = 65535  # CUDA's limit on grid axes 1 and 2


def _programs(programs: int) -> int:
    """``programs`` for grid axis 1 or 2, which CUDA caps at 65535 (the
    pixel tiles, which may number millions, go on axis 0)."""
    if programs > _GRID_YZ_MAX:
        raise ValueError(f"the Triton backend launches at most {_GRID_YZ_MAX} channel "
                         f"programs per pixel tile, this call needs {programs}")
    return programs


def _pixel_group_grid(pixels: int, groups: int, per_group: int, tile: str):
    """(pixel tiles, groups x tiles of ``per_group`` channels): tiles never
    span groups. Pixels go on axis 0, the one that may exceed 65535."""
    return lambda meta: (triton.cdiv(pixels, meta["BLOCK_P"]),
                         _programs(groups * triton.cdiv(per_group, meta[tile])))


def _column_grid(columns: int, cout_g: int, cin_g: int, rows: str):
    """(columns, tiles of ``cout_g`` rows, tiles of ``cin_g`` input
    channels): a column holds at most ``cout_g`` rows, an upper bound
    needing no host sync (tiles past a column's rows do nothing)."""
    return lambda meta: (columns, triton.cdiv(cout_g, meta[rows]),
                         triton.cdiv(cin_g, meta["BLOCK_C"]))


def _forward_output(x: torch.Tensor, values: torch.Tensor, topo, conv: ConvArgs,
                    memory_format=torch.contiguous_format):
    """``(out, pixels)``: ``x`` checked against the values' dtype, the
    uninitialised ``[B, Cout, OH, OW]`` output in ``memory_format`` (the
    kernel stores every element) and its batch*OH*OW pixels, the kernels'
    flat pixel axis."""
    _check("x", x, values.dtype)
    oh, ow = output_hw(tuple(x.shape[2:]), topo.kernel_size, conv)
    out = torch.empty(x.shape[0], topo.cout, oh, ow, device=x.device, dtype=x.dtype,
                      memory_format=memory_format)
    return out, x.shape[0] * oh * ow


def _grad_input_output(grad_out: torch.Tensor, values: torch.Tensor, topo,
                       in_hw: tuple[int, int]):
    """``(gi, pixels)``: ``grad_out`` checked, the uninitialised
    ``[B, Cin, H, W]`` gradient and its batch*H*W pixels."""
    _check("grad_out", grad_out, values.dtype)
    gi = torch.empty(grad_out.shape[0], topo.cin, *in_hw,
                     device=grad_out.device, dtype=grad_out.dtype)
    return gi, grad_out.shape[0] * in_hw[0] * in_hw[1]


def _check_grad_weight(x: torch.Tensor, grad_out: torch.Tensor):
    """Grad-weight takes its dtype from ``x``: no values to check against."""
    _check("x", x, x.dtype)
    _check("grad_out", grad_out, x.dtype)


def _conv_scalars(conv: ConvArgs) -> tuple:
    return (*conv.stride, *conv.padding, *conv.dilation)


# ---------------------------------------------------------------------------
# in-kernel index arithmetic
# ---------------------------------------------------------------------------
@triton.jit
def _pixel_tile(pid, P, H, W, BLOCK: tl.constexpr):
    """Program ``pid``'s BLOCK flat pixels over batch*H*W (``P`` of them):
    ``(offs, ok, b, pix, row, col)``, ``ok`` where they exist, the rest as
    in ``_split_pixels``."""
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    b, pix, row, col = _split_pixels(offs, H, W)
    return offs, offs < P, b, pix, row, col


@triton.jit
def _split_pixels(offs, H, W):
    """``(b, pix, row, col)`` of flat pixel indices over batch*H*W: the
    image, the pixel within it (row * W + col), its row and column."""
    hw = H * W
    b = offs // hw
    pix = offs - b * hw
    row = pix // W
    return b, pix, row, pix - row * W


# The masks below AND onto the caller's mask, left to right: ANDed apart and
# then together, block1xn's forward took 3 registers more and its grad-input
# spilled 32 B more.
@triton.jit
def _in_image(ok, ih, iw, H, W):
    """``ok`` where input pixel (ih, iw) lies in the image (else padding)."""
    return ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)


@triton.jit
def _tap_source(ok, ih, iw, kh, kw, OH, OW,
                STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W):
    """``(oh, ow, ok)``: the output pixel whose tap (kh, kw) lands on input
    pixel (ih, iw), and ``ok`` where there is one: the numerator must be
    >= 0 (clamped before dividing: no negative //), a multiple of the
    stride, and the quotient inside the output. Broadcasts like its
    operands."""
    nh = ih + PAD_H - kh * DIL_H
    nw = iw + PAD_W - kw * DIL_W
    oh = tl.maximum(nh, 0) // STRIDE_H
    ow = tl.maximum(nw, 0) // STRIDE_W
    ok = (ok & (nh >= 0) & (nw >= 0) & (oh * STRIDE_H == nh) & (ow * STRIDE_W == nw)
          & (oh < OH) & (ow < OW))
    return oh, ow, ok


@triton.jit
def _group_tile(pid, PER_GROUP, BLOCK: tl.constexpr):
    """``(g, local, ok)`` of program ``pid``'s tile of BLOCK channels, the
    tiles of each group numbered in turn (none spans two groups): its group,
    channel offsets within the group, and which of them exist."""
    tiles = tl.cdiv(PER_GROUP, BLOCK)
    g = pid // tiles
    local = (pid - g * tiles) * BLOCK + tl.arange(0, BLOCK)
    return g, local, local < PER_GROUP


@triton.jit
def _store_channel_pixel(ptr, acc, b, ch, pix, C, HW, ch_ok, p_ok):
    """Store a ``[channels, pixels]`` tile into an NCHW-contiguous ``[B, C,
    H, W]`` tensor (``HW = H * W``)."""
    off = ((b.to(tl.int64) * C)[None, :] + ch[:, None]) * HW + pix[None, :]
    tl.store(ptr + off, acc.to(ptr.dtype.element_ty), mask=ch_ok[:, None] & p_ok[None, :])


@triton.jit
def _column_reduction(x_ptr, go_ptr, x_c, c_ok, go_o, o_ok, kh, kw, P, p_hi,
                      H, W, OH, OW, sxb, sxh, sxw, sgb, sgh, sgw,
                      STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                      ACC: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr,
                      BLOCK_P: tl.constexpr):
    """Grad-weight of one column (tap (kh, kw)): ``acc[o, c] = sum_p dY[o,
    p] x[c, p shifted by the tap]`` over output pixels ``p < p_hi`` (``P``
    or 0), as ``[O, P] x [P, C]`` dots. ``go_o``/``x_c`` are the rows'
    grad_out channel offsets and the input channels' x offsets."""
    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=ACC)
    for p0 in range(0, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        b, pix, oh, ow = _split_pixels(offs_p, OH, OW)
        ih = oh * STRIDE_H - PAD_H + kh * DIL_H
        iw = ow * STRIDE_W - PAD_W + kw * DIL_W
        x_ok = _in_image(p_ok, ih, iw, H, W)
        bl = b.to(tl.int64)
        gv = tl.load(go_ptr + go_o[:, None] + (bl * sgb + oh * sgh + ow * sgw)[None, :],
                     mask=o_ok[:, None] & p_ok[None, :], other=0.0)
        xv = tl.load(x_ptr + (bl * sxb + ih * sxh + iw * sxw)[:, None] + x_c[None, :],
                     mask=x_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(gv, xv, acc, input_precision="ieee")
    return acc


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
