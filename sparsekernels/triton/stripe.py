"""Triton kernels of the stripe-sparse conv2d: forward, grad-input, grad-weight.

A stripe is ``W[o, :, kh, kw]``: one output channel's ``Cin/g`` weights at
one kernel position (``tap = kh * Kw + kw``); see
sparsekernels/formats/stripe.py for the CSR (``row_ptr``/``tap_idx``, per
output channel) and its transpose (``tap_ptr``/``stripe_idx``/``stripe_row``,
per column ``g * Kh*Kw + tap``). ``values[j]`` is stripe ``j``'s ``Cin/g``
weights, contiguous.

All three passes are implicit GEMMs with ``tl.dot`` whose K dimension is what
a stripe holds (input channels) or what a column holds (stripes); none uses
atomics, so every result is deterministic (bitwise equal run to run).

Forward, ``out[o, p] = sum_tap W_(o,tap) . x[:, p shifted by tap]``: a
program owns an output tile (``BLOCK_O`` consecutive output channels of one
group x ``BLOCK_P`` output pixels, flattened over batch*OH*OW) and loops over
the Kh*Kw taps in order. Each row keeps a cursor into its CSR row: as taps are
strictly increasing within a row, the stripe of (row, tap) is the one under
the cursor when its tap matches, and the cursor then advances. Per tap the A
tile is the rows' stripes (zero for rows without that tap: the per-row tap
mask), the B tile is the input shifted by the tap (masked loads do the
padding), and K = Cin/g runs in ``BLOCK_K`` chunks. A tap no row of the tile
keeps is skipped whole.

  Tradeoff: this owns each output element in one program (no partial sums,
  no atomics, no workspace) but skips work only at (tile x tap) granularity:
  with an unstructured random pattern almost every tile of 16-128 rows keeps
  every tap, so the dot runs at dense cost with zero rows. The alternative,
  one program per column (group, tap) with M = exactly the stripes kept there
  (``tap_ptr``), does only the kept work, but several taps add into the same
  output: that needs atomics (non-deterministic) or a Kh*Kw-times larger
  workspace reduced afterwards. Reordering output channels so rows with the
  same taps share tiles would give both; the format does not do that (yet).

NaN/Inf: a forward tile's rows without the tap hold zeros in the dot, and
``0 * NaN = NaN`` would leak an input only pruned stripes read to their
rows. So, as in the pattern kind (protocol and helpers: common.py), a device
flag says whether ``x`` holds a NaN/Inf (no host sync) and the kernel is
launched twice: the dot variant stores when the flag is clear, the
``EXACT`` one (per tap, an FMA loop over the input channels adding only the
kept rows' products: ``tl.where``, never ``0 *``) when it is set. Grad-input
and grad-weight need no flag: every row of their tiles' K dimension is a
kept stripe (a whole stripe: all of its input channels are kept), and
padded rows or columns of a tile are never stored, so a NaN/Inf reaches
only what kept weights carry it to.

Grad-input, ``dX[c, q] = sum_tap sum_(stripes s at tap) W_s[c] dY[o_s, q
unshifted by tap]``: a program owns (``BLOCK_C`` input channels of one group x
``BLOCK_P`` input pixels) and loops over taps, and per tap over the stripes of
column (group, tap) in ``BLOCK_S`` chunks: K = kept stripes only, no wasted
work from pruning. Output pixels a tap cannot reach (stride, border) load 0.

Grad-weight, only for kept stripes: a program owns ``BLOCK_S`` stripes of one
column x ``BLOCK_C`` input channels and reduces over all batch*OH*OW output
pixels: ``[S, P] x [P, C]`` (dY rows gathered by output channel, x shifted
by the column's tap). The grid is (columns, Cout/g tiles, Cin/g tiles):
an upper bound needing no host sync; tiles past a column's stripes do nothing.

Inputs may have any strides (channels_last, sliced): the kernels take
strides. Outputs are NCHW-contiguous (``values``-shaped for grad-weight) and
every element is written by a kernel. Tiles never span groups, so grouped
and depthwise convs are exact but depthwise (Cin/g = 1) pads K to 16 in the
forward dot and runs at a fraction of peak.

dtypes: fp16, bf16, fp32, fp64 through ``tl.dot``, accumulating in fp32
(fp64 for fp64); ``input_precision="ieee"``: no TF32 rounding of fp32.
Under ``TRITON_INTERPRET=1`` each kernel runs one fixed config; on a GPU a few
configs are autotuned (see common.py).
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from ..conv_args import ConvArgs, output_hw
from ..formats.stripe import StripeTopology
from .common import (
    _ACC, _Launcher, _cfg, _check, _conv_scalars, _flag_picks, _launch_dot_or_exact, _nonfinite,
)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------
@triton.jit
def _forward_kernel(
    x_ptr, v_ptr, row_ptr, tap_idx, flag_ptr, bias_ptr, out_ptr,
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
    cur = tl.load(row_ptr + oc, mask=o_ok, other=0)  # each row's CSR cursor
    end = tl.load(row_ptr + oc + 1, mask=o_ok, other=0)

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
    for t in range(0, tl.where(run, T, 0)):
        kept = cur < end
        tap = tl.load(tap_idx + cur, mask=kept, other=-1)
        has = kept & (tap == t)  # rows keeping the stripe (row, t)
        j = cur
        cur += has.to(tl.int32)
        if tl.max(has.to(tl.int32), axis=0) > 0:
            kh = t // KW
            kw = t - kh * KW
            ih = ih0 + kh * DIL_H
            iw = iw0 + kw * DIL_W
            x_ok = p_ok & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_pix = x_base + ih * sxh + iw * sxw
            w_row = j.to(tl.int64) * C_IN_G
            if EXACT:  # add the kept stripes' products only: never 0 * NaN
                w_p = v_ptr + w_row
                x_p = x_ptr + x_pix
                for c in range(0, C_IN_G):
                    w = tl.load(w_p, mask=has, other=0.0)
                    xv = tl.load(x_p, mask=x_ok, other=0.0)
                    acc += tl.where(has[:, None], w.to(ACC)[:, None] * xv.to(ACC)[None, :], 0.0)
                    w_p += 1
                    x_p += sxc
            else:
                for k0 in range(0, C_IN_G, BLOCK_K):
                    kk = k0 + offs_k
                    k_ok = kk < C_IN_G
                    w = tl.load(v_ptr + w_row[:, None] + kk[None, :],
                                mask=has[:, None] & k_ok[None, :], other=0.0)
                    xv = tl.load(x_ptr + kk[:, None].to(tl.int64) * sxc + x_pix[None, :],
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
    go_ptr, v_ptr, tap_ptr, stripe_idx, stripe_row, gi_ptr,
    P, CIN, C_IN_G, H, W, OH, OW,
    sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_S: tl.constexpr,
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
    offs_s = tl.arange(0, BLOCK_S)

    T: tl.constexpr = KH * KW
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC)
    for t in range(0, T):
        kh = t // KW
        kw = t - kh * KW
        # Output pixel whose tap (kh, kw) lands on (ih, iw), if any: the
        # numerator must be >= 0 (clamped before dividing: no negative //),
        # a multiple of the stride, and the quotient inside the output.
        nh = ih + PAD_H - kh * DIL_H
        nw = iw + PAD_W - kw * DIL_W
        oh = tl.maximum(nh, 0) // STRIDE_H
        ow = tl.maximum(nw, 0) // STRIDE_W
        q_ok = (p_ok & (nh >= 0) & (nw >= 0) & (oh * STRIDE_H == nh) & (ow * STRIDE_W == nw)
                & (oh < OH) & (ow < OW))
        go_pix = go_b + oh * sgh + ow * sgw
        s_lo = tl.load(tap_ptr + g * T + t)
        s_hi = tl.load(tap_ptr + g * T + t + 1)
        for s0 in range(s_lo, s_hi, BLOCK_S):  # the stripes of column (g, t)
            ss = s0 + offs_s
            s_ok = ss < s_hi
            j = tl.load(stripe_idx + ss, mask=s_ok, other=0)
            o = tl.load(stripe_row + ss, mask=s_ok, other=0)
            wt = tl.load(v_ptr + j.to(tl.int64)[None, :] * C_IN_G + c_local[:, None],
                         mask=c_ok[:, None] & s_ok[None, :], other=0.0)
            gv = tl.load(go_ptr + o.to(tl.int64)[:, None] * sgc + go_pix[None, :],
                         mask=s_ok[:, None] & q_ok[None, :], other=0.0)
            acc = tl.dot(wt, gv, acc, input_precision="ieee")

    gi_off = ((b.to(tl.int64) * CIN)[None, :] + ci[:, None]) * hw + pix[None, :]
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty),
             mask=c_ok[:, None] & p_ok[None, :])


@triton.jit
def _grad_weight_kernel(
    x_ptr, go_ptr, tap_ptr, stripe_idx, stripe_row, gw_ptr,
    P, C_IN_G, H, W, OH, OW,
    sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, ACC: tl.constexpr,
    BLOCK_S: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # gw[s, c] = sum_p dY[o_s, p] * x[c, p shifted by the column's tap].
    T: tl.constexpr = KH * KW
    col = tl.program_id(0)  # g * T + tap
    g = col // T
    t = col - g * T
    kh = t // KW
    kw = t - kh * KW
    s_first = tl.load(tap_ptr + col) + tl.program_id(1) * BLOCK_S
    s_hi = tl.load(tap_ptr + col + 1)
    ss = s_first + tl.arange(0, BLOCK_S)
    s_ok = ss < s_hi
    j = tl.load(stripe_idx + ss, mask=s_ok, other=0)
    o = tl.load(stripe_row + ss, mask=s_ok, other=0)
    c_local = tl.program_id(2) * BLOCK_C + tl.arange(0, BLOCK_C)
    c_ok = c_local < C_IN_G
    x_c = (g * C_IN_G + c_local).to(tl.int64) * sxc
    go_o = o.to(tl.int64) * sgc

    ohw = OH * OW
    p_hi = tl.where(s_first < s_hi, P, 0)  # a tile past the column's stripes: no work
    acc = tl.zeros([BLOCK_S, BLOCK_C], dtype=ACC)
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
                     mask=s_ok[:, None] & p_ok[None, :], other=0.0)
        xv = tl.load(x_ptr + (bl * sxb + ih * sxh + iw * sxw)[:, None] + x_c[None, :],
                     mask=x_ok[:, None] & c_ok[None, :], other=0.0)
        acc = tl.dot(gv, xv, acc, input_precision="ieee")

    gw_off = j.to(tl.int64)[:, None] * C_IN_G + c_local[None, :]
    tl.store(gw_ptr + gw_off, acc.to(gw_ptr.dtype.element_ty),
             mask=s_ok[:, None] & c_ok[None, :])


# ---------------------------------------------------------------------------
# launch configs (configs[0] is the interpreter's). GPU configs: none spills
# for fp16 on sm_90 (../shared/tools/triton_sm90_report.py; 64x128 tiles
# spill with 4 warps, so they get 8); M tiles >= 64 lower to wgmma, smaller
# ones to mma.sync.
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
# The exact (NaN/Inf) forward: one config, large tiles, so that when x is
# finite its programs (which only read the flag) are few.
_forward_exact = _Launcher(_forward_kernel, [_cfg(8, BLOCK_O=32, BLOCK_P=128, BLOCK_K=16)],
                           key=["KH", "KW"])
_grad_input = _Launcher(
    _grad_input_kernel,
    [_cfg(4, BLOCK_C=16, BLOCK_P=64, BLOCK_S=16),
     _cfg(4, 3, BLOCK_C=64, BLOCK_P=64, BLOCK_S=32),
     _cfg(4, 3, BLOCK_C=64, BLOCK_P=128, BLOCK_S=32),
     _cfg(4, 3, BLOCK_C=32, BLOCK_P=128, BLOCK_S=32),
     _cfg(8, 3, BLOCK_C=128, BLOCK_P=128, BLOCK_S=32)],
    key=["P", "C_IN_G", "KH", "KW"],
)
_grad_weight = _Launcher(
    _grad_weight_kernel,
    [_cfg(4, BLOCK_S=16, BLOCK_C=16, BLOCK_P=64),
     _cfg(4, 3, BLOCK_S=64, BLOCK_C=64, BLOCK_P=64),
     _cfg(4, 3, BLOCK_S=32, BLOCK_C=64, BLOCK_P=64),
     _cfg(8, 3, BLOCK_S=64, BLOCK_C=32, BLOCK_P=128),
     _cfg(8, 3, BLOCK_S=128, BLOCK_C=64, BLOCK_P=64)],
    key=["P", "C_IN_G", "KH", "KW"],
)


# ---------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------
def forward(
    x: torch.Tensor,
    values: torch.Tensor,
    topo: StripeTopology,
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

    def grid(meta):
        o_tiles = triton.cdiv(cout_g, meta["BLOCK_O"])
        return (triton.cdiv(p, meta["BLOCK_P"]), g * o_tiles)

    # The flag (x holds a NaN/Inf, on the device) picks the launch that stores.
    _launch_dot_or_exact(
        _forward, _forward_exact, grid,
        x, values.contiguous(), topo.row_ptr, topo.tap_idx, _nonfinite(x),
        bias.contiguous() if bias is not None else out, out,
        p, cin // g, h, w, oh, ow, cout, cout_g,
        *x.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, HAS_BIAS=bias is not None, ACC=_ACC[x.dtype],
    )
    return out


def grad_input(
    grad_out: torch.Tensor,
    values: torch.Tensor,
    topo: StripeTopology,
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

    def grid(meta):
        return (triton.cdiv(p, meta["BLOCK_P"]), g * triton.cdiv(cin_g, meta["BLOCK_C"]))

    _grad_input(
        grid,
        grad_out, values.contiguous(), topo.tap_ptr, topo.stripe_idx, topo.stripe_row, gi,
        p, cin, cin_g, h, w, oh, ow,
        *grad_out.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, ACC=_ACC[grad_out.dtype],
    )
    return gi


def grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    topo: StripeTopology,
    conv: ConvArgs,
) -> torch.Tensor:
    """``[nnz, Cin/g]`` gradient w.r.t. the kept stripes' values."""
    _check("x", x, x.dtype)
    _check("grad_out", grad_out, x.dtype)
    bsz, cin, h, w = x.shape
    cout, oh, ow = grad_out.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cin_g, cout_g = cin // g, cout // g
    nnz = topo.nnz
    gw = torch.empty(nnz, cin_g, device=x.device, dtype=x.dtype)
    if nnz == 0:
        return gw
    p = bsz * oh * ow
    if p == 0:  # no pixel to reduce over
        return gw.zero_()

    def grid(meta):  # a column holds at most Cout/g stripes: no host sync
        return (g * kh * kw, triton.cdiv(cout_g, meta["BLOCK_S"]),
                triton.cdiv(cin_g, meta["BLOCK_C"]))

    _grad_weight(
        grid,
        x, grad_out, topo.tap_ptr, topo.stripe_idx, topo.stripe_row, gw,
        p, cin_g, h, w, oh, ow,
        *x.stride(), *grad_out.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, ACC=_ACC[x.dtype],
    )
    return gw
