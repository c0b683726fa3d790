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

from ..conv_args import ConvArgs
from ..formats.stripe import StripeTopology
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
    g, o_local, o_ok = _group_tile(tl.program_id(1), COUT_G, BLOCK_O)
    oc = g * COUT_G + o_local
    cur = tl.load(row_ptr + oc, mask=o_ok, other=0)  # each row's CSR cursor
    end = tl.load(row_ptr + oc + 1, mask=o_ok, other=0)

    offs_p, p_ok, b, pix, oh, ow = _pixel_tile(tl.program_id(0), P, OH, OW, BLOCK_P)
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
            x_ok = _in_image(p_ok, ih, iw, H, W)
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
    _store_channel_pixel(out_ptr, acc, b, oc, pix, COUT, OH * OW, o_ok, p_ok & run_p)


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
    g, c_local, c_ok = _group_tile(tl.program_id(1), C_IN_G, BLOCK_C)
    ci = g * C_IN_G + c_local

    offs_p, p_ok, b, pix, ih, iw = _pixel_tile(tl.program_id(0), P, H, W, BLOCK_P)
    go_b = b.to(tl.int64) * sgb
    offs_s = tl.arange(0, BLOCK_S)

    T: tl.constexpr = KH * KW
    acc = tl.zeros([BLOCK_C, BLOCK_P], dtype=ACC)
    for t in range(0, T):
        kh = t // KW
        kw = t - kh * KW
        oh, ow, q_ok = _tap_source(p_ok, ih, iw, kh, kw, OH, OW,
                                   STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W)
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

    _store_channel_pixel(gi_ptr, acc, b, ci, pix, CIN, H * W, c_ok, p_ok)


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

    p_hi = tl.where(s_first < s_hi, P, 0)  # a tile past the column's stripes: no work
    acc = _column_reduction(x_ptr, go_ptr, x_c, c_ok, go_o, s_ok, kh, kw, P, p_hi,
                            H, W, OH, OW, sxb, sxh, sxw, sgb, sgh, sgw,
                            STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
                            ACC, BLOCK_S, BLOCK_C, BLOCK_P)

    gw_off = j.to(tl.int64)[:, None] * C_IN_G + c_local[None, :]
    tl.store(gw_ptr + gw_off, acc.to(gw_ptr.dtype.element_ty),
             mask=s_ok[:, None] & c_ok[None, :])


# ---------------------------------------------------------------------------
# launch configs (see common.py: fp16/bf16 tiles lower to wgmma, fp32/fp64
# search small ones, the interpreter runs the first of those). Forward and
# grad-weight search the configs shared with the pattern kernels.
# ---------------------------------------------------------------------------
_forward = _Launcher(_forward_kernel, key=["P", "C_IN_G", "COUT_G", "KH", "KW"],
                     **_CHANNEL_PIXEL_CONFIGS)
_forward_exact = _Launcher(_forward_kernel, key=["KH", "KW"], **_CHANNEL_PIXEL_EXACT_CONFIGS)
_grad_input = _Launcher(
    _grad_input_kernel,
    [_cfg(4, 3, BLOCK_C=64, BLOCK_P=64, BLOCK_S=32),
     _cfg(4, 3, BLOCK_C=64, BLOCK_P=128, BLOCK_S=32),
     _cfg(8, 3, BLOCK_C=128, BLOCK_P=128, BLOCK_S=32)],
    key=["P", "C_IN_G", "KH", "KW"],
    wide=[_cfg(4, 2, BLOCK_C=16, BLOCK_P=64, BLOCK_S=16),
          _cfg(4, 2, BLOCK_C=32, BLOCK_P=64, BLOCK_S=16),
          _cfg(4, 3, BLOCK_C=32, BLOCK_P=128, BLOCK_S=32)],
)
_grad_weight = _Launcher(_grad_weight_kernel, key=["P", "C_IN_G", "KH", "KW"],
                         **_column_configs("BLOCK_S"))


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
    out, p = _forward_output(x, values, topo, conv)
    if p == 0:
        return out
    cin, h, w = x.shape[1:]
    cout, oh, ow = out.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cout_g = cout // g
    # The flag (x holds a NaN/Inf, on the device) picks the launch that stores.
    _launch_dot_or_exact(
        _forward, _forward_exact, _pixel_group_grid(p, g, cout_g, "BLOCK_O"),
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
    gi, p = _grad_input_output(grad_out, values, topo, in_hw)
    if p == 0:
        return gi
    oh, ow = grad_out.shape[2:]
    cin, h, w = gi.shape[1:]
    kh, kw = topo.kernel_size
    g = conv.groups
    cin_g = cin // g
    _grad_input(
        _pixel_group_grid(p, g, cin_g, "BLOCK_C"),
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
    _check_grad_weight(x, grad_out)
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
    _grad_weight(
        _column_grid(g * kh * kw, cout_g, cin_g, "BLOCK_S"),
        x, grad_out, topo.tap_ptr, topo.stripe_idx, topo.stripe_row, gw,
        p, cin_g, h, w, oh, ow,
        *x.stride(), *grad_out.stride(), *_conv_scalars(conv),
        KH=kh, KW=kw, ACC=_ACC[x.dtype],
    )
    return gw
