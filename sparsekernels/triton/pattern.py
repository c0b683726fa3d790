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

from ..conv_args import ConvArgs, output_hw
from ..formats.pattern import PatternTopology
from .common import (
    _ACC, _Launcher, _cfg, _check, _conv_scalars, _flag_picks, _launch_dot_or_exact, _nonfinite,
)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------
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
    pid_o = tl.program_id(1)
    o_tiles = tl.cdiv(COUT_G, BLOCK_O)
    g = pid_o // o_tiles
    o_local = (pid_o - g * o_tiles) * BLOCK_O + tl.arange(0, BLOCK_O)
    o_ok = o_local < COUT_G
    oc = g * COUT_G + o_local
    map_row = oc * C_IN_G

    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    ohw = OH * OW
    b = offs_p // ohw
    pix = offs_p - b * ohw
    oh = pix // OW
    ow = pix - oh * OW
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
                    x_ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
                    x_pix = x_base + ih * sxh + iw * sxw
                    if EXACT:  # add kept products only: never 0 * NaN
                        for j in range(0, BLOCK_K):
                            c = k0 + j
                            c_in = tl.full([1], c, tl.int32) < C_IN_G  # (a tensor mask)
                            vs = tl.load(vmap_ptr + map_row + c, mask=o_ok & c_in, other=-1)
                            ps = tl.load(pos_ptr + tl.load(pmap_ptr + map_row + c,
                                                           mask=vs >= 0, other=0) * T + t,
                                         mask=vs >= 0, other=-1)
                            keep = ps >= 0
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
    out_off = ((b.to(tl.int64) * COUT)[None, :] + oc[:, None]) * ohw + pix[None, :]
    tl.store(out_ptr + out_off, acc.to(out_ptr.dtype.element_ty),
             mask=o_ok[:, None] & (p_ok & run_p)[None, :])


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
    pid_c = tl.program_id(1)
    c_tiles = tl.cdiv(C_IN_G, BLOCK_C)
    g = pid_c // c_tiles
    c_local = (pid_c - g * c_tiles) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c_local < C_IN_G
    ci = g * C_IN_G + c_local

    offs_p = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
    p_ok = offs_p < P
    hw = H * W
    b = offs_p // hw
    pix = offs_p - b * hw
    ih = pix // W
    iw = pix - ih * W
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
                    # Output pixel whose tap (kh, kw) lands on (ih, iw), if any:
                    # numerator >= 0 (clamped before dividing: no negative //),
                    # a multiple of the stride, quotient inside the output.
                    nh = ih + PAD_H - kh * DIL_H
                    nw = iw + PAD_W - kw * DIL_W
                    oh = tl.maximum(nh, 0) // STRIDE_H
                    ow = tl.maximum(nw, 0) // STRIDE_W
                    q_ok = (p_ok & (nh >= 0) & (nw >= 0) & (oh * STRIDE_H == nh)
                            & (ow * STRIDE_W == nw) & (oh < OH) & (ow < OW))
                    go_pix = go_b + oh * sgh + ow * sgw
                    if EXACT:  # add kept products only: never 0 * NaN
                        for j in range(0, BLOCK_K):
                            o = k0 + j
                            o_in = tl.full([1], o, tl.int32) < COUT_G  # (a tensor mask)
                            row = (g * COUT_G + o) * C_IN_G
                            vs = tl.load(vmap_ptr + row + c_local, mask=c_ok & o_in, other=-1)
                            ps = tl.load(pos_ptr + tl.load(pmap_ptr + row + c_local,
                                                           mask=vs >= 0, other=0) * T + t,
                                         mask=vs >= 0, other=-1)
                            keep = ps >= 0
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

    gi_off = ((b.to(tl.int64) * CIN)[None, :] + ci[:, None]) * hw + pix[None, :]
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty),
             mask=c_ok[:, None] & (p_ok & run_p)[None, :])


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
    m_off = (oc * C_IN_G)[:, None] + c_local[None, :]
    vstart = tl.load(vmap_ptr + m_off, mask=o_ok[:, None] & c_ok[None, :], other=-1)
    has_kernel = vstart >= 0
    pos = tl.load(pos_ptr + tl.load(pmap_ptr + m_off, mask=has_kernel, other=0) * T + t,
                  mask=has_kernel, other=-1)
    kept = pos >= 0
    x_c = (g * C_IN_G + c_local).to(tl.int64) * sxc
    go_o = oc.to(tl.int64) * sgc

    ohw = OH * OW
    p_hi = tl.where(tl.max(kept.to(tl.int32)) > 0, P, 0)  # nothing kept: no work
    acc = tl.zeros([BLOCK_O, BLOCK_C], dtype=ACC)
    for p0 in range(0, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < P
        b = offs_p // ohw
        pix = offs_p - b * ohw
        oh = pix // OW
        ow = pix - oh * OW
        ih = oh * STRIDE_H - PAD_H + kh * DIL_H
        iw = ow * STRIDE_W - PAD_W + kw * DIL_W
        x_ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        bl = b.to(tl.int64)
        gv = tl.load(go_ptr + go_o[:, None] + (bl * sgb + oh * sgh + ow * sgw)[None, :],
                     mask=o_ok[:, None] & p_ok[None, :], other=0.0)
        xv = tl.load(x_ptr + (bl * sxb + ih * sxh + iw * sxw)[:, None] + x_c[None, :],
                     mask=x_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(gv, xv, acc, input_precision="ieee")

    tl.store(gw_ptr + vstart + pos, acc.to(gw_ptr.dtype.element_ty), mask=kept)


# ---------------------------------------------------------------------------
# launch configs (configs[0] is the interpreter's). What the dot launches
# compile to on sm_90 (../shared/tools/triton_sm90_report.py, Triton 3.9,
# 3x3, fp16): M tiles >= 64 lower to wgmma, smaller ones to mma.sync; no
# config spills; 64x64x32/4 warps: forward 234 registers, grad-input 244,
# grad-weight 222 (stripe's forward: 141); 128x128 tiles sit at 255. No
# cp.async: both operands are gathers (weights through the maps, activations
# at computed pixel offsets, 2-byte loads), and the per-(chunk, tap) skip
# branches keep the loop from being software-pipelined. fp32 (ieee, no TF32)
# lowers to FMA, fp64 to mma.sync (DMMA), as in the other kinds.
# ---------------------------------------------------------------------------
_forward = _Launcher(
    _forward_kernel,
    [_cfg(4, BLOCK_O=16, BLOCK_P=64, BLOCK_K=16),
     _cfg(4, 3, BLOCK_O=64, BLOCK_P=64, BLOCK_K=32),
     _cfg(8, 3, BLOCK_O=64, BLOCK_P=128, BLOCK_K=32),
     _cfg(8, 3, BLOCK_O=128, BLOCK_P=128, BLOCK_K=32),
     _cfg(4, 3, BLOCK_O=32, BLOCK_P=128, BLOCK_K=32),
     _cfg(4, 2, BLOCK_O=16, BLOCK_P=128, BLOCK_K=16)],
    key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
)
_grad_input = _Launcher(
    _grad_input_kernel,
    [_cfg(4, BLOCK_C=16, BLOCK_P=64, BLOCK_K=16),
     _cfg(4, 3, BLOCK_C=64, BLOCK_P=64, BLOCK_K=32),
     _cfg(8, 3, BLOCK_C=64, BLOCK_P=128, BLOCK_K=32),
     _cfg(4, 3, BLOCK_C=32, BLOCK_P=128, BLOCK_K=32),
     _cfg(8, 3, BLOCK_C=128, BLOCK_P=128, BLOCK_K=32)],
    key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
)
# The exact (NaN/Inf) launches: one config; large tiles, so that when the
# input is finite their programs (which only read the flag) are few. fp16 on
# sm_90: forward 255 registers and 88 B of spills, grad-input 107 and none;
# only ever slow when the input already holds NaN/Inf.
_forward_exact = _Launcher(_forward_kernel, [_cfg(8, BLOCK_O=32, BLOCK_P=128, BLOCK_K=16)],
                           key=["KH", "KW"])
_grad_input_exact = _Launcher(_grad_input_kernel, [_cfg(8, BLOCK_C=32, BLOCK_P=128, BLOCK_K=16)],
                              key=["KH", "KW"])
_grad_weight = _Launcher(
    _grad_weight_kernel,
    [_cfg(4, BLOCK_O=16, BLOCK_C=16, BLOCK_P=64),
     _cfg(4, 3, BLOCK_O=64, BLOCK_C=64, BLOCK_P=64),
     _cfg(4, 3, BLOCK_O=32, BLOCK_C=64, BLOCK_P=64),
     _cfg(8, 3, BLOCK_O=64, BLOCK_C=32, BLOCK_P=128),
     _cfg(8, 3, BLOCK_O=128, BLOCK_C=64, BLOCK_P=64)],
    key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
)


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
    _check("x", x, values.dtype)
    bsz, cin, h, w = x.shape
    cout, (kh, kw) = topo.cout, topo.kernel_size
    oh, ow = output_hw((h, w), (kh, kw), conv)
    out = torch.empty(bsz, cout, oh, ow, device=x.device, dtype=x.dtype)
    p = bsz * oh * ow
    if p == 0:
        return out
    g = conv.groups
    cout_g = cout // g
    vmap, pmap, pos = _plan(topo)

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_P"]), g * triton.cdiv(cout_g, meta["BLOCK_O"]))

    args = (x, values.contiguous(), vmap, pmap, pos, _nonfinite(x),
            bias.contiguous() if bias is not None else out, out,
            p, cin // g, h, w, oh, ow, cout, cout_g,
            *x.stride(), *_conv_scalars(conv))
    consts = dict(KH=kh, KW=kw, HAS_BIAS=bias is not None, ACC=_ACC[x.dtype])
    # Both launch; the flag on the device picks the one that does the work
    # (no host sync), so the dot kernel carries no registers for the other.
    _launch_dot_or_exact(_forward, _forward_exact, grid, *args, **consts)
    return out


def grad_input(
    grad_out: torch.Tensor,
    values: torch.Tensor,
    topo: PatternTopology,
    conv: ConvArgs,
    in_hw: tuple[int, int],
) -> torch.Tensor:
    """``[B, Cin, H, W]`` NCHW-contiguous gradient w.r.t. the input."""
    _check("grad_out", grad_out, values.dtype)
    bsz, cout, oh, ow = grad_out.shape
    h, w = in_hw
    cin, (kh, kw) = topo.cin, topo.kernel_size
    gi = torch.empty(bsz, cin, h, w, device=grad_out.device, dtype=grad_out.dtype)
    p = bsz * h * w
    if p == 0:
        return gi
    g = conv.groups
    cin_g = cin // g
    vmap, pmap, pos = _plan(topo)

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_P"]), g * triton.cdiv(cin_g, meta["BLOCK_C"]))

    args = (grad_out, values.contiguous(), vmap, pmap, pos, _nonfinite(grad_out), gi,
            p, cin, cin_g, h, w, oh, ow, cout // g,
            *grad_out.stride(), *_conv_scalars(conv))
    consts = dict(KH=kh, KW=kw, ACC=_ACC[grad_out.dtype])
    _launch_dot_or_exact(_grad_input, _grad_input_exact, grid, *args, **consts)  # as in forward
    return gi


def grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    topo: PatternTopology,
    conv: ConvArgs,
) -> torch.Tensor:
    """``[nnz values]`` gradient w.r.t. the kept weights' values."""
    _check("x", x, x.dtype)
    _check("grad_out", grad_out, x.dtype)
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

    def grid(meta):
        return (g * kh * kw, triton.cdiv(cout_g, meta["BLOCK_O"]),
                triton.cdiv(cin_g, meta["BLOCK_C"]))

    _grad_weight(
        grid,
        x, grad_out, vmap, pmap, pos, gw,
        p, cin_g, h, w, oh, ow, cout_g,
        *x.stride(), *grad_out.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, ACC=_ACC[x.dtype],
    )
    return gw
