"""Triton kernels of the pattern-sparse conv2d: forward, grad-input, grad-weight.

Each ``Kh x Kw`` kernel ``W[o, i]`` keeps the taps of one pattern of a small
per-layer library, or is dropped (see sparsekernels/formats/pattern.py and
csrc/include/sparsekernels/pattern.h). Per call the host builds, with a few
device ops and no host sync, a small plan the kernels index directly:

- ``vmap`` int32 ``[Cout, Cin/g]``: where kernel ``(o, i)``'s values start
  (``value_ptr``), ``-1`` if the kernel is dropped;
- ``pmap`` int32 ``[Cout, Cin/g]``: its pattern (0 where dropped, never read);
- ``pos`` int32 ``[P, Kh*Kw]``: the rank of tap ``t`` within pattern ``p``,
  ``-1`` if ``p`` does not keep ``t``.

So weight ``(o, i, t)`` is kept iff ``vmap >= 0`` and ``pos[pmap, t] >= 0``,
and is ``values[vmap + pos]``: every weight load is masked by that, so a
pruned weight is never read.

All three passes are implicit GEMMs on ``tl.dot`` (tensor cores on a GPU),
over the union of the tile's kept positions, like the stripe kernels:

Forward, ``out[o, p] = sum_(i, t) W[o, i, t] x[i, p shifted by t]``: a
program owns ``BLOCK_O`` output channels of one group x ``BLOCK_P`` output
pixels (flattened over batch*OH*OW). It loops over input-channel chunks
(``BLOCK_K``) and, per chunk, over the taps: A = the tile's weights at tap
``t`` (``[BLOCK_O, BLOCK_K]``, zero where not kept), B = the input chunk
shifted by ``t`` (masked loads do the padding). A chunk in which no row of
the tile keeps a kernel, and a tap no kept kernel of the chunk has, are
skipped whole; otherwise the dot runs at dense cost with zeros.

  Why a dot and not an exact FMA loop over each row's kept (channel, tap)
  list: rows keep different positions, so a per-row K list gives every row
  its own gathered B operand (one gathered load per FMA, no tensor cores).
  At PatDNN's 4-of-9 patterns plus connectivity pruning the tensor-core dot
  over the union (dense cost, ~15x the FMA rate) is still the faster one.

NaN/Inf: a dot multiplies a pruned position's zero by its input, and
``0 * NaN = NaN`` would leak an input only pruned weights read. So the host
checks the operand that is not a weight (``x``; ``grad_out`` for
grad-input) for non-finite values, on the device (one elementwise pass, no
sync), into a flag, and launches the kernel twice: the dot variant does the
work when the flag is clear, the ``EXACT`` variant (an FMA loop per column
adding only kept products: ``tl.where``, never ``0 *``) when it is set; the
other launch's programs read the flag and store nothing (the protocol's
helpers are shared with stripe: common.py). Two variants, not a branch in
one kernel: with the branch the dot kernel (64x64x32, fp16) used 255
registers and spilled 164 B (234 and none without). Exact is slow, but
only runs when the input already holds NaN/Inf.

Grad-input, ``dX[i, q] = sum_(o, t) W[o, i, t] dY[o, q unshifted by t]``: the
mirror image: a program owns ``BLOCK_C`` input channels of one group x
``BLOCK_P`` input pixels, loops over output-channel chunks (``BLOCK_K``) and
taps, A = ``W[chunk, tile, t]`` transposed (the same ``vmap``), B = dY at the
output pixels tap ``t`` maps to (0 where the tap reaches none).

Grad-weight, only kept weights: a program owns tap ``t`` of one group x
``BLOCK_O`` output channels x ``BLOCK_C`` input channels and reduces over all
batch*OH*OW output pixels, ``[O, P] x [P, C]``; it stores the kept entries of
its tile (each kept weight belongs to exactly one program) and skips the
reduction when the tile keeps none at ``t``. Each output element is its own
dot over P, so a NaN only pruned weights read lands only in entries never
stored: no flag needed. No pass uses atomics: results are bitwise
deterministic.

Inputs may have any strides (channels_last, sliced). Outputs are
NCHW-contiguous (``values``-shaped for grad-weight). dtypes: fp16, bf16, fp32,
fp64, accumulating in fp32 (fp64 for fp64), ``input_precision="ieee"`` (no
TF32). Under ``TRITON_INTERPRET=1`` each kernel runs one fixed config (bf16
is refused there: numpy has none); on a GPU a few configs are autotuned.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..conv_args import ConvArgs
from ..formats.pattern import PatternTopology
from .common import (
    _ACC, _CHANNEL_PIXEL_CONFIGS, _CHANNEL_PIXEL_EXACT_CONFIGS, _Launcher, _cfg, _check_grad_weight,
    _column_configs, _column_grid, _column_reduction, _conv_scalars, _flag_picks,
    _forward_output, _grad_input_output, _group_tile, _in_image, _launch_dot_or_exact, _nonfinite,
    _pixel_group_grid, _pixel_tile, _store_channel_pixel, _tap_source,
)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------
@triton.jit
def _kept_at_tap(vmap_ptr, pmap_ptr, pos_ptr, row_off, col_off, mask, t, T: tl.constexpr):
    """``(vstart, pos, kept)`` of kernels ``(o, i)`` at tap ``t``, read from
    the plan at ``row_off + col_off`` (``o * Cin/g``, ``i``) where ``mask``:
    weight ``(o, i, t)`` is ``values[vstart + pos]`` where ``kept``; a
    dropped kernel or pruned tap is not kept (its value is never read).
    Row and column offsets are added to the pointers in turn: summed first,
    the exact forward spilled 108 B more on sm_90."""
    vstart = tl.load(vmap_ptr + row_off + col_off, mask=mask, other=-1)
    has_kernel = vstart >= 0
    pat = tl.load(pmap_ptr + row_off + col_off, mask=has_kernel, other=0)
    pos = tl.load(pos_ptr + pat * T + t, mask=has_kernel, other=-1)
    return vstart, pos, pos >= 0


@triton.jit
def _forward_kernel(
    x_ptr, v_ptr, vmap_ptr, pmap_ptr, pos_ptr, flag_ptr, bias_ptr, out_ptr,
    P, C_IN_G, H, W, OH, OW, COUT, COUT_G,
    sxb, sxc, sxh, sxw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, HAS_BIAS: tl.constexpr, ACC: tl.constexpr,
    EXACT: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Output pixel tile on axis 0 (can be many), channel tile on axis 1.
    g, o_local, o_ok = _group_tile(tl.program_id(1), COUT_G, BLOCK_O)
    oc = g * COUT_G + o_local
    map_row = oc * C_IN_G

    offs_p, p_ok, b, pix, oh, ow = _pixel_tile(tl.program_id(0), P, OH, OW, BLOCK_P)
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    x_base = b.to(tl.int64) * sxb + (g * C_IN_G).to(tl.int64) * sxc
    offs_k = tl.arange(0, BLOCK_K)
    # The dot launch runs when x is finite, the exact one when it is not.
    run_p, run = _flag_picks(flag_ptr, offs_p, EXACT)  # per pixel: a store mask

    T: tl.constexpr = KH * KW
    acc = tl.zeros([BLOCK_O, BLOCK_P], dtype=ACC)
    for k0 in range(0, tl.where(run, C_IN_G, 0), BLOCK_K):
        kk = k0 + offs_k
        k_ok = kk < C_IN_G
        vstart = tl.load(vmap_ptr + map_row[:, None] + kk[None, :],
                         mask=o_ok[:, None] & k_ok[None, :], other=-1)
        has_kernel = vstart >= 0
        if tl.max(has_kernel.to(tl.int32)) > 0:  # some row keeps a kernel in the chunk
            pat_t = tl.load(pmap_ptr + map_row[:, None] + kk[None, :], mask=has_kernel,
                            other=0) * T
            x_chan = kk.to(tl.int64) * sxc
            for t in range(0, T):
                pos = tl.load(pos_ptr + pat_t + t, mask=has_kernel, other=-1)
                kept = pos >= 0
                if tl.max(kept.to(tl.int32)) > 0:
                    kh = t // KW
                    kw = t - kh * KW
                    ih = ih0 + kh * DIL_H
                    iw = iw0 + kw * DIL_W
                    x_ok = _in_image(p_ok, ih, iw, H, W)
                    x_pix = x_base + ih * sxh + iw * sxw
                    if EXACT:  # add kept products only: never 0 * NaN
                        for j in range(0, BLOCK_K):
                            c = k0 + j
                            c_in = tl.full([1], c, tl.int32) < C_IN_G  # (a tensor mask)
                            vs, ps, keep = _kept_at_tap(vmap_ptr, pmap_ptr, pos_ptr, map_row, c,
                                                        o_ok & c_in, t, T)
                            w = tl.load(v_ptr + vs + ps, mask=keep, other=0.0)
                            xv = tl.load(x_ptr + x_pix + c.to(tl.int64) * sxc,
                                         mask=x_ok & c_in, other=0.0)
                            acc += tl.where(keep[:, None],
                                            w.to(ACC)[:, None] * xv.to(ACC)[None, :], 0.0)
                    else:
                        w = tl.load(v_ptr + vstart + pos, mask=kept, other=0.0)
                        xv = tl.load(x_ptr + x_chan[:, None] + x_pix[None, :],
                                     mask=k_ok[:, None] & x_ok[None, :], other=0.0)
                        acc = tl.dot(w, xv, acc, input_precision="ieee")

    if HAS_BIAS:
        bias = tl.load(bias_ptr + oc, mask=o_ok, other=0.0)
        acc += bias.to(ACC)[:, None]
    _store_channel_pixel(out_ptr, acc, b, oc, pix, COUT, OH * OW, o_ok, p_ok & run_p)


@triton.jit
def _grad_input_kernel(
    go_ptr, v_ptr, vmap_ptr, pmap_ptr, pos_ptr, flag_ptr, gi_ptr,
    P, CIN, C_IN_G, H, W, OH, OW, COUT_G,
    sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr, EXACT: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # Input pixel tile on axis 0, input channel tile (within a group) on axis 1.
    g, c_local, c_ok = _group_tile(tl.program_id(1), C_IN_G, BLOCK_C)
    ci = g * C_IN_G + c_local

    offs_p, p_ok, b, pix, ih, iw = _pixel_tile(tl.program_id(0), P, H, W, BLOCK_P)
    go_b = b.to(tl.int64) * sgb
    offs_k = tl.arange(0, BLOCK_K)
    # The dot launch runs when grad_out is finite, the exact one when it is not.
    run_p, run = _flag_picks(flag_ptr, offs_p, EXACT)  # per pixel: a store mask

    T: tl.constexpr = KH * KW
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC)
    for k0 in range(0, tl.where(run, COUT_G, 0), BLOCK_K):  # the group's output channels
        oo = k0 + offs_k
        o_ok = oo < COUT_G
        oc = g * COUT_G + oo
        m_off = (oc * C_IN_G)[None, :] + c_local[:, None]  # [C, K]: W[o, c] transposed
        vstart = tl.load(vmap_ptr + m_off, mask=c_ok[:, None] & o_ok[None, :], other=-1)
        has_kernel = vstart >= 0
        if tl.max(has_kernel.to(tl.int32)) > 0:
            pat_t = tl.load(pmap_ptr + m_off, mask=has_kernel, other=0) * T
            go_chan = oc.to(tl.int64) * sgc
            for t in range(0, T):
                pos = tl.load(pos_ptr + pat_t + t, mask=has_kernel, other=-1)
                kept = pos >= 0
                if tl.max(kept.to(tl.int32)) > 0:
                    kh = t // KW
                    kw = t - kh * KW
                    oh, ow, q_ok = _tap_source(p_ok, ih, iw, kh, kw, OH, OW,
                                               STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W)
                    go_pix = go_b + oh * sgh + ow * sgw
                    if EXACT:  # add kept products only: never 0 * NaN
                        for j in range(0, BLOCK_K):
                            o = k0 + j
                            o_in = tl.full([1], o, tl.int32) < COUT_G  # (a tensor mask)
                            row = (g * COUT_G + o) * C_IN_G
                            vs, ps, keep = _kept_at_tap(vmap_ptr, pmap_ptr, pos_ptr, row, c_local,
                                                        c_ok & o_in, t, T)
                            w = tl.load(v_ptr + vs + ps, mask=keep, other=0.0)
                            gv = tl.load(go_ptr + go_pix + (g * COUT_G + o).to(tl.int64) * sgc,
                                         mask=q_ok & o_in, other=0.0)
                            acc += tl.where(keep[:, None],
                                            w.to(ACC)[:, None] * gv.to(ACC)[None, :], 0.0)
                    else:
                        w = tl.load(v_ptr + vstart + pos, mask=kept, other=0.0)
                        gv = tl.load(go_ptr + go_chan[:, None] + go_pix[None, :],
                                     mask=o_ok[:, None] & q_ok[None, :], other=0.0)
                        acc = tl.dot(w, gv, acc, input_precision="ieee")

    _store_channel_pixel(gi_ptr, acc, b, ci, pix, CIN, H * W, c_ok, p_ok & run_p)


@triton.jit
def _grad_weight_kernel(
    x_ptr, go_ptr, vmap_ptr, pmap_ptr, pos_ptr, gw_ptr,
    P, C_IN_G, H, W, OH, OW, COUT_G,
    sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_O: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # gw[o, c, t] = sum_p dY[o, p] * x[c, p shifted by t], stored where kept.
    T: tl.constexpr = KH * KW
    col = tl.program_id(0)  # g * T + t
    g = col // T
    t = col - g * T
    kh = t // KW
    kw = t - kh * KW
    o_local = tl.program_id(1) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o_local < COUT_G
    oc = g * COUT_G + o_local
    c_local = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c_local < C_IN_G
    vstart, pos, kept = _kept_at_tap(vmap_ptr, pmap_ptr, pos_ptr,
                                     (oc * C_IN_G)[:, None], c_local[None, :],
                                     o_ok[:, None] & c_ok[None, :], t, T)
    x_c = (g * C_IN_G + c_local).to(tl.int64) * sxc
    go_o = oc.to(tl.int64) * sgc

    p_hi = tl.where(tl.max(kept.to(tl.int32)) > 0, P, 0)  # nothing kept: no work
    acc = _column_reduction(x_ptr, go_ptr, x_c, c_ok, go_o, o_ok, kh, kw, P, p_hi,
                            H, W, OH, OW, sxb, sxh, sxw, sgb, sgh, sgw,
                            STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                            ACC, BLOCK_O, BLOCK_C, BLOCK_P)

    tl.store(gw_ptr + vstart + pos, acc.to(gw_ptr.dtype.element_ty), mask=kept)


# ---------------------------------------------------------------------------
# launch configs (see common.py: fp16/bf16 tiles lower to wgmma, fp32/fp64
# search small ones, the interpreter runs the first of those). What the dot
# launches compile to on sm_90 (../shared/tools/triton_sm90_report.py, Triton 3.9,
# 3x3, fp16): M tiles >= 64 lower to wgmma, smaller ones to mma.sync; no
# config spills; 64x64x32/4 warps: forward 234 registers, grad-input 244,
# grad-weight 222 (stripe's forward: 141); 128x128 tiles sit at 255. No
# cp.async: both operands are gathers (weights through the maps, activations
# at computed pixel offsets, 2-byte loads), and the per-(chunk, tap) skip
# branches keep the loop from being software-pipelined. fp32 (ieee, no TF32)
# lowers to FMA, fp64 to mma.sync (DMMA), as in the other kinds.
# Forward and grad-weight search the configs shared with stripe (common.py).
# ---------------------------------------------------------------------------
_forward = _Launcher(_forward_kernel, key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
                     **_CHANNEL_PIXEL_CONFIGS)
_grad_input = _Launcher(
    _grad_input_kernel,
    [_cfg(4, 3, BLOCK_C=64, BLOCK_P=64, BLOCK_K=32),
     _cfg(8, 3, BLOCK_C=64, BLOCK_P=128, BLOCK_K=32),
     _cfg(8, 3, BLOCK_C=128, BLOCK_P=128, BLOCK_K=32)],
    key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
    wide=[_cfg(4, 2, BLOCK_C=16, BLOCK_P=64, BLOCK_K=16),
          _cfg(4, 2, BLOCK_C=32, BLOCK_P=64, BLOCK_K=16),
          _cfg(4, 2, BLOCK_C=16, BLOCK_P=128, BLOCK_K=16)],
)
# The exact (NaN/Inf) launches: one config each, large tiles, so that when
# the input is finite their programs (which only read the flag) are few.
# They run FMA (no dot); the forward's spills 240 B on sm_90, which costs
# only when the input already holds NaN/Inf (a config that does not spill,
# 16x64 pixels, launches 4x the programs on every call).
_forward_exact = _Launcher(_forward_kernel, key=["KH", "KW"], **_CHANNEL_PIXEL_EXACT_CONFIGS)
_grad_input_exact = _Launcher(_grad_input_kernel, [_cfg(8, BLOCK_C=32, BLOCK_P=128, BLOCK_K=16)],
                              key=["KH", "KW"])
_grad_weight = _Launcher(_grad_weight_kernel, key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
                         **_column_configs("BLOCK_O"))


# ---------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------
def _rows(ptr: torch.Tensor, count: int) -> torch.Tensor:
    """The CSR row of each of ``count`` entries (int64), with no host sync."""
    entries = torch.arange(count, device=ptr.device, dtype=torch.int64)
    return torch.searchsorted(ptr[1:].long(), entries, right=True)


def _plan(topo: PatternTopology) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(vmap, pmap, pos)``: see the module docstring."""
    cout, cin_g = topo.cout, topo.shape[1]
    dev, i32 = topo.chan_idx.device, torch.int32
    rows, chans = _rows(topo.row_ptr, topo.nnz), topo.chan_idx.long()
    vmap = torch.full((cout, cin_g), -1, dtype=i32, device=dev)
    vmap[rows, chans] = topo.value_ptr[:-1]
    pmap = torch.zeros((cout, cin_g), dtype=i32, device=dev)
    pmap[rows, chans] = topo.pattern_idx
    n_taps = topo.pattern_taps.numel()
    prow = _rows(topo.pattern_ptr, n_taps)
    pos = torch.full((topo.num_patterns, topo.taps), -1, dtype=i32, device=dev)
    rank = torch.arange(n_taps, device=dev, dtype=torch.int64) - topo.pattern_ptr.long()[prow]
    pos[prow, topo.pattern_taps.long()] = rank.to(i32)
    return vmap, pmap, pos


def forward(
    x: torch.Tensor,
    values: torch.Tensor,
    topo: PatternTopology,
    bias: Optional[torch.Tensor],
    conv: ConvArgs,
) -> torch.Tensor:
    """``[B, Cout, OH, OW]`` NCHW-contiguous output of the sparse conv."""
    out, p = _forward_output(x, values, topo, conv)
    if p == 0:
        return out
    cin, h, w = x.shape[1:]
    cout, oh, ow = out.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cout_g = cout // g
    vmap, pmap, pos = _plan(topo)
    args = (x, values.contiguous(), vmap, pmap, pos, _nonfinite(x),
            bias.contiguous() if bias is not None else out, out,
            p, cin // g, h, w, oh, ow, cout, cout_g,
            *x.stride(), *_conv_scalars(conv))
    consts = dict(KH=kh, KW=kw, HAS_BIAS=bias is not None, ACC=_ACC[x.dtype])
    # Both launch; the flag on the device picks the one that does the work
    # (no host sync), so the dot kernel carries no registers for the other.
    _launch_dot_or_exact(_forward, _forward_exact, _pixel_group_grid(p, g, cout_g, "BLOCK_O"),
                         *args, **consts)
    return out


def grad_input(
    grad_out: torch.Tensor,
    values: torch.Tensor,
    topo: PatternTopology,
    conv: ConvArgs,
    in_hw: tuple[int, int],
) -> torch.Tensor:
    """``[B, Cin, H, W]`` NCHW-contiguous gradient w.r.t. the input."""
    gi, p = _grad_input_output(grad_out, values, topo, in_hw)
    if p == 0:
        return gi
    cout, oh, ow = grad_out.shape[1:]
    cin, h, w = gi.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cin_g = cin // g
    vmap, pmap, pos = _plan(topo)
    args = (grad_out, values.contiguous(), vmap, pmap, pos, _nonfinite(grad_out), gi,
            p, cin, cin_g, h, w, oh, ow, cout // g,
            *grad_out.stride(), *_conv_scalars(conv))
    consts = dict(KH=kh, KW=kw, ACC=_ACC[grad_out.dtype])
    _launch_dot_or_exact(_grad_input, _grad_input_exact,  # as in forward
                         _pixel_group_grid(p, g, cin_g, "BLOCK_C"), *args, **consts)
    return gi


def grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    topo: PatternTopology,
    conv: ConvArgs,
) -> torch.Tensor:
    """``[nnz values]`` gradient w.r.t. the kept weights' values."""
    _check_grad_weight(x, grad_out)
    bsz, cin, h, w = x.shape
    cout, oh, ow = grad_out.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cin_g, cout_g = cin // g, cout // g
    gw = torch.empty(topo.nnz_values, device=x.device, dtype=x.dtype)
    if topo.nnz_values == 0:
        return gw
    p = bsz * oh * ow
    if p == 0:  # no pixel to reduce over
        return gw.zero_()
    vmap, pmap, pos = _plan(topo)
    _grad_weight(
        _column_grid(g * kh * kw, cout_g, cin_g, "BLOCK_O"),
        x, grad_out, vmap, pmap, pos, gw,
        p, cin_g, h, w, oh, ow, cout_g,
        *x.stride(), *grad_out.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, ACC=_ACC[x.dtype],
    )
    return gw
