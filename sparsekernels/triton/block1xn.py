"""Triton kernels of the 1xN block-sparse conv2d: forward, grad-input, grad-weight.

Design (tiles and why; every config's sm_90 compile checked with
../shared/tools/triton_sm90_report.py: fp16/bf16 dots lower to wgmma with 0
spill bytes, fp32 to FMA, fp64 to mma.sync):

- **Forward**: implicit GEMM, BLOCK_M output pixels (M) x one block row's N
  output channels (N), K = the row's kept blocks x taps, tap-major: the tap
  is one scalar per K step, so the padding test and pixel offsets are per
  pixel and a gathered element costs one add. A program takes ROWS
  consecutive rows of one group (autotuned 1-4) one after the other,
  sharing the pixel decode and, through L1, the input they read in common.
  Per-row dots, not one dot over the rows' union or concatenated K: those
  multiply other rows' pruned zeros with x (a NaN/Inf there would leak,
  needing the two-launch protocol of common.py) and do ROWS times the MMA
  work; per-row dots read only kept weights and are exact. Loads put
  threads along the pixels for NCHW (coalesced; a shifted window cannot be
  vectorised) and along K for channels_last. The output is written in x's
  memory format (the op's copy to the input's layout becomes a no-op).
  bf16: 64-186 registers for NCHW, up to 254 for channels_last; 0 spills.
- **Grad-input**: the transposed conv as dots, BLOCK_M input pixels x
  BLOCK_C input channels, K = the group's rows x taps x lanes. Per row, A
  is grad_out of its N channels at each tap's source pixels (shared by the
  tile's channels), B its blocks reading the tile's channels (found by a
  per-channel cursor walking the transposed CSR in row order), 0 where a
  row keeps none: the dot variant of the NaN/Inf protocol, with the old
  per-channel GEMV as the exact variant (runs only when grad_out holds a
  NaN/Inf). Pixels go in stride phases (ih % stride, iw % stride): within
  one, the taps that reach grad_out and their offsets are scalars, so only
  those taps are visited and nothing divides per element. bf16: 80-255
  registers, 0 spills.
- **Grad-weight**: per block row one GEMM [(tap, block) pairs, pixels] x
  [pixels, N]: M = the row's kept (block, tap) pairs, tap-major (no 9->16
  tap padding), B = grad_out of the row's lanes, shared. Split-K over the
  pixels (about 1024 programs a layer, >= 128 pixels a split) into fp32
  (fp64) partial tiles summed in split order by a second kernel:
  deterministic, no atomics; one split writes gw directly. bf16: 128-214
  registers, 0 spills. **Shift form** (3x3, stride 1, N <= 32, rows keeping
  _GW_SHIFT_MIN_KEPT blocks on average): M = the row's kept blocks, K = the
  input pixels, all 9 taps in 9 accumulators; A (x of the blocks' channels)
  is loaded once per K tile with no padding test and serves 9 dots, each
  against grad_out shifted by its tap, A zeroed where that grad_out pixel
  does not exist (exact: a NaN of x meets only what the conv pairs it
  with). About 2.5x the general kernel's MACs per instruction on sm_90;
  8 warps (4 spill). Same splits and partial sums.

Shape and stride ints are not specialised (``do_not_specialize``: one
compile per config and constexpr set, not per ==1 / %16 pattern), and the
autotune keys are coarse: log2 of the pixels and of the row length (or
channels), N, the kernel size and the layout.

Layout conventions (see sparsekernels/formats/block1xn.py):

- a block row ``r = g * rows_per_group + q`` covers output channels
  ``g * cout_g + q * N + [0, lanes)`` with ``lanes = min(N, cout_g - q * N)``;
  lanes past that are padding: never stored, zero weight-gradient.
- ``values[blk, kh, kw, n]`` is contiguous: the N-vector of one (block, tap)
  starts at ``(blk * Kh * Kw + tap) * N``.

Inputs may have any strides (channels_last, sliced): the kernels take
strides. The forward output is in the input's memory format, grad-input
NCHW-contiguous, grad-weight values-shaped; every element is written by a
kernel.

dtypes: fp16, bf16, fp32, fp64, all through ``tl.dot``. fp16/bf16 accumulate
in fp32, fp64 in fp64. Dots use ``input_precision="ieee"``: fp32 inputs are
not rounded to TF32 (FMA on a GPU, 5-10x slower than TF32, but fp32-accurate
like the reference).

Under ``TRITON_INTERPRET=1`` each kernel runs one fixed config (autotuning
the interpreter is meaningless); on a GPU a few configs are autotuned.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import triton
import triton.language as tl

from ..conv_args import ConvArgs
from ..formats.block1xn import BlockTopology
from ..ops.sparse_conv import channels_last_like
from .common import (
    _ACC, _Launcher, _cfg, _check_grad_weight, _conv_scalars, _flag_picks, _forward_output,
    _grad_input_output, _group_tile, _in_image, _nonfinite, _pixel_tile, _programs,
    _split_pixels, _tap_source,
)


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------
# The shape and stride ints are not specialised (review P4: Triton would
# otherwise compile a variant per ==1 / %16 pattern of them, 100+ for a
# ResNet-50); nothing here gains from it: the gathers cannot vectorise anyway.
_FORWARD_INTS = ["P", "C_IN_G", "H", "W", "OH", "OW", "COUT_G", "ROWS_PER_GROUP",
                 "sxb", "sxc", "sxh", "sxw", "sob", "soc", "soh", "sow",
                 "STRIDE_H", "STRIDE_W", "PAD_H", "PAD_W", "DIL_H", "DIL_W", "P_LOG2", "K_LOG2"]


@triton.jit(do_not_specialize=_FORWARD_INTS)
def _forward_kernel(
    x_ptr, v_ptr, row_ptr, col_idx, bias_ptr, out_ptr,
    P, C_IN_G, H, W, OH, OW, COUT_G, ROWS_PER_GROUP,
    sxb, sxc, sxh, sxw, sob, soc, soh, sow,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    P_LOG2, K_LOG2,  # autotune key only
    KH: tl.constexpr, KW: tl.constexpr, N: tl.constexpr, HAS_BIAS: tl.constexpr,
    CL: tl.constexpr, ACC: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # BLOCK_M output pixels x ROWS consecutive block rows of one group, one
    # row after the other: [BLOCK_M, K] x [K, N] per row, K = the row's kept
    # blocks x taps. The pixel decode is shared, and so (through L1) is the
    # input the rows read in common.
    pid_r = tl.program_id(1)
    tiles = tl.cdiv(ROWS_PER_GROUP, ROWS)
    g = pid_r // tiles
    q0 = (pid_r - g * tiles) * ROWS

    _, m_ok, b, _, oh, ow = _pixel_tile(tl.program_id(0), P, OH, OW, BLOCK_M)
    ih0 = oh * STRIDE_H - PAD_H
    iw0 = ow * STRIDE_W - PAD_W
    bl = b.to(tl.int64)
    x_pix = bl * sxb + ih0.to(tl.int64) * sxh + iw0.to(tl.int64) * sxw
    x_grp = (g * C_IN_G).to(tl.int64) * sxc
    o_pix = bl * sob + oh.to(tl.int64) * soh + ow.to(tl.int64) * sow
    offs_n = tl.arange(0, BLOCK_N)
    T: tl.constexpr = KH * KW

    for j in range(ROWS):
        q = q0 + j
        # A short last tile of rows: the rows past the group's end are empty.
        r = g * ROWS_PER_GROUP + tl.minimum(q, ROWS_PER_GROUP - 1)
        lo = tl.load(row_ptr + r)
        hi = tl.where(q < ROWS_PER_GROUP, tl.load(row_ptr + r + 1), lo)
        chunks = tl.cdiv(hi - lo, BLOCK_K)
        acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
        # K in tap-major chunks: the tap is one scalar per step, so the
        # padding test and the pixel offsets are per pixel, and a gathered
        # element costs one add (no per-element tap decode).
        for it in range(0, T * chunks):
            tap = it // chunks
            kh = tap // KW
            kw = tap - kh * KW
            ih = ih0 + kh * DIL_H
            iw = iw0 + kw * DIL_W
            p_ok = _in_image(m_ok, ih, iw, H, W)
            p_off = x_pix + (kh * DIL_H * sxh + kw * DIL_W * sxw)
            offs_k = lo + (it - tap * chunks) * BLOCK_K + tl.arange(0, BLOCK_K)
            k_ok = offs_k < hi
            col = tl.load(col_idx + offs_k, mask=k_ok, other=0)
            c_off = x_grp + col.to(tl.int64) * sxc
            if CL:  # channels innermost in memory: threads along K
                a = tl.load(x_ptr + p_off[:, None] + c_off[None, :],
                            mask=p_ok[:, None] & k_ok[None, :], other=0.0)
            else:  # NCHW: threads along the pixels, coalesced
                a = tl.trans(tl.load(x_ptr + c_off[:, None] + p_off[None, :],
                                     mask=k_ok[:, None] & p_ok[None, :], other=0.0))
            w_off = (offs_k.to(tl.int64) * T + tap)[:, None] * N + offs_n[None, :]
            w = tl.load(v_ptr + w_off, mask=k_ok[:, None] & (offs_n < N)[None, :], other=0.0)
            acc = tl.dot(a, w, acc, input_precision="ieee")

        oc = g * COUT_G + q * N + offs_n
        n_ok = offs_n < tl.minimum(COUT_G - q * N, N)  # none for rows past the group
        if HAS_BIAS:
            acc += tl.load(bias_ptr + oc, mask=n_ok, other=0.0).to(ACC)[None, :]
        out = acc.to(out_ptr.dtype.element_ty)
        if CL:
            tl.store(out_ptr + o_pix[:, None] + oc[None, :].to(tl.int64) * soc, out,
                     mask=m_ok[:, None] & n_ok[None, :])
        else:
            tl.store(out_ptr + oc[:, None].to(tl.int64) * soc + o_pix[None, :], tl.trans(out),
                     mask=n_ok[:, None] & m_ok[None, :])


_GRAD_INPUT_INTS = ["PIX", "CIN", "C_IN_G", "H", "W", "OH", "OW", "COUT_G", "ROWS_PER_GROUP",
                    "PH_H", "PH_W", "STEP_H", "STEP_W", "sgb", "sgc", "sgh", "sgw",
                    "STRIDE_H", "STRIDE_W", "PAD_H", "PAD_W", "DIL_H", "DIL_W", "P_LOG2", "C_LOG2"]


@triton.jit
def _phase_taps(ph, PAD, DIL, STRIDE, STEP, K: tl.constexpr):
    """``(k0, count)``: the taps ``k0 + i * STEP`` (i < count) of one kernel
    axis that reach grad_out from input phase ``ph``, those with ``ph + PAD
    - k * DIL`` a multiple of STRIDE (``STEP = STRIDE / gcd(STRIDE, DIL)``
    apart)."""
    k0 = K  # none
    for k in range(0, STEP):
        k0 = tl.where((k0 == K) & (k < K) & ((ph + PAD - k * DIL) % STRIDE == 0), k, k0)
    return k0, (K - k0 + STEP - 1) // STEP


@triton.jit(do_not_specialize=_GRAD_INPUT_INTS)
def _grad_input_kernel(
    go_ptr, v_ptr, col_ptr, block_idx, block_row, gi_ptr, flag_ptr,
    PIX, CIN, C_IN_G, H, W, OH, OW, COUT_G, ROWS_PER_GROUP, PH_H, PH_W, STEP_H, STEP_W,
    sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    P_LOG2, C_LOG2,  # autotune key only
    KH: tl.constexpr, KW: tl.constexpr, N: tl.constexpr, CL: tl.constexpr,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # The transposed conv as [BLOCK_M input pixels, K] x [K, BLOCK_C input
    # channels] dots, K = the group's block rows x taps x lanes: per (row,
    # tap), A is grad_out of the row's N channels at the tap's source pixels
    # (shared by every channel of the tile) and B the row's blocks reading the
    # tile's channels (0 where the row keeps none: so this is the dot variant
    # of the NaN/Inf protocol, see common.py).
    #
    # Pixels come in stride phases (ih % STRIDE_H, iw % STRIDE_W): within a
    # phase, which taps reach grad_out and at which offset is one scalar per
    # tap, so the loop visits only those taps, never divides per element, and
    # a gathered element costs one add.
    T: tl.constexpr = KH * KW
    TN: tl.constexpr = T * N
    LANE_CHUNKS: tl.constexpr = (N + BLOCK_K - 1) // BLOCK_K
    tiles = tl.cdiv(PIX, BLOCK_M)  # PIX: pixels of the largest phase
    phase = tl.program_id(0) // tiles
    ph = phase // STRIDE_W
    pw = phase - ph * STRIDE_W
    _, m_ok, b, _, u, v = _pixel_tile(tl.program_id(0) - phase * tiles, PIX, PH_H, PH_W, BLOCK_M)
    ih = u * STRIDE_H + ph
    iw = v * STRIDE_W + pw
    m_ok = m_ok & (ih < H) & (iw < W)
    go_pix = b.to(tl.int64) * sgb + u.to(tl.int64) * sgh + v.to(tl.int64) * sgw
    kh0, n_kh = _phase_taps(ph, PAD_H, DIL_H, STRIDE_H, STEP_H, KH)
    kw0, n_kw = _phase_taps(pw, PAD_W, DIL_W, STRIDE_W, STEP_W, KW)

    g, c_loc, c_ok = _group_tile(tl.program_id(1), C_IN_G, BLOCK_C)
    ci = g * C_IN_G + c_loc
    run_c, run = _flag_picks(flag_ptr, c_loc, False)
    # Per channel, a cursor into its blocks (the transposed CSR, in row order).
    cur = tl.load(col_ptr + ci, mask=c_ok, other=0)
    end = tl.load(col_ptr + ci + 1, mask=c_ok, other=0)
    offs_k = tl.arange(0, BLOCK_K)

    acc = tl.zeros([BLOCK_M, BLOCK_C], dtype=ACC)
    for q in range(0, ROWS_PER_GROUP * run.to(tl.int32)):
        kept = tl.load(block_row + cur, mask=cur < end, other=-1) == g * ROWS_PER_GROUP + q
        w_blk = tl.load(block_idx + cur, mask=kept, other=0).to(tl.int64) * TN
        cur += kept.to(tl.int32)
        lanes = tl.minimum(COUT_G - q * N, N)
        go_row = (g * COUT_G + q * N).to(tl.int64) * sgc
        for it in range(0, n_kh * n_kw * LANE_CHUNKS):
            i = it // LANE_CHUNKS
            i_h = i // n_kw
            kh = kh0 + i_h * STEP_H
            kw = kw0 + (i - i_h * n_kw) * STEP_W
            oh_d = (ph + PAD_H - kh * DIL_H) // STRIDE_H  # exact: a multiple, of either sign
            ow_d = (pw + PAD_W - kw * DIL_W) // STRIDE_W
            oh = u + oh_d
            ow = v + ow_d
            p_ok = m_ok & (oh >= 0) & (oh < OH) & (ow >= 0) & (ow < OW)
            p_off = go_pix + (oh_d.to(tl.int64) * sgh + ow_d.to(tl.int64) * sgw)
            n = (it - i * LANE_CHUNKS) * BLOCK_K + offs_k
            n_ok = n < lanes  # padded lanes of a short last row: no channel
            n_off = go_row + n.to(tl.int64) * sgc
            if CL:  # channels innermost in memory: threads along the lanes
                a = tl.load(go_ptr + p_off[:, None] + n_off[None, :],
                            mask=p_ok[:, None] & n_ok[None, :], other=0.0)
            else:  # NCHW: threads along the pixels, coalesced
                a = tl.trans(tl.load(go_ptr + n_off[:, None] + p_off[None, :],
                                     mask=n_ok[:, None] & p_ok[None, :], other=0.0))
            w_k = (kh * KW + kw) * N + n
            w = tl.load(v_ptr + w_blk[None, :] + w_k[:, None],
                        mask=n_ok[:, None] & kept[None, :], other=0.0)
            acc = tl.dot(a, w, acc, input_precision="ieee")

    gi_off = (b.to(tl.int64)[None, :] * CIN + ci[:, None]) * (H * W) + (ih * W + iw)[None, :]
    tl.store(gi_ptr + gi_off, tl.trans(acc).to(gi_ptr.dtype.element_ty),
             mask=(c_ok & run_c)[:, None] & m_ok[None, :])


@triton.jit(do_not_specialize=["P", "CIN", "C_IN_G", "H", "W", "OH", "OW", "COUT_G",
                               "ROWS_PER_GROUP", "sgb", "sgc", "sgh", "sgw", "STRIDE_H",
                               "STRIDE_W", "PAD_H", "PAD_W", "DIL_H", "DIL_W"])
def _grad_input_exact_kernel(
    go_ptr, v_ptr, col_ptr, block_idx, block_row, gi_ptr, flag_ptr,
    P, CIN, C_IN_G, H, W, OH, OW, COUT_G, ROWS_PER_GROUP,
    sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    KH: tl.constexpr, KW: tl.constexpr, N: tl.constexpr,
    ACC: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # The exact variant, for a grad_out holding a NaN/Inf: one input channel
    # x BLOCK_M input pixels, K = only the kept (block, tap, lane) products
    # of the channel, reduced on CUDA cores (tl.sum, no dot). Slow; it runs
    # only when the flag is set.
    ci = tl.program_id(1)
    g = ci // C_IN_G
    offs, m_ok, b, pix, ih, iw = _pixel_tile(tl.program_id(0), P, H, W, BLOCK_M)
    run_m, run = _flag_picks(flag_ptr, offs, True)
    go_row = b.to(tl.int64) * sgb

    TN: tl.constexpr = KH * KW * N
    j_lo = tl.load(col_ptr + ci)
    k_hi = (tl.load(col_ptr + ci + 1) - j_lo) * TN * run.to(tl.int32)
    acc = tl.zeros([BLOCK_M], dtype=ACC)
    for k0 in range(0, k_hi, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_ok = offs_k < k_hi
        j = j_lo + offs_k // TN
        rem = offs_k % TN  # tap * N + lane: the offset inside the block
        tap = rem // N
        n = rem - tap * N
        kh = tap // KW
        kw = tap - kh * KW
        blk = tl.load(block_idx + j, mask=k_ok, other=0)
        q = tl.load(block_row + j, mask=k_ok, other=0) - g * ROWS_PER_GROUP
        k_ok = k_ok & (q * N + n < COUT_G)  # padded lanes of a short last row
        oc = g * COUT_G + q * N + n
        oh, ow, ok = _tap_source(m_ok[:, None] & k_ok[None, :], ih[:, None], iw[:, None],
                                 kh[None, :], kw[None, :], OH, OW,
                                 STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W)
        g_off = go_row[:, None] + oc[None, :].to(tl.int64) * sgc + oh * sgh + ow * sgw
        gv = tl.load(go_ptr + g_off, mask=ok, other=0.0)
        w = tl.load(v_ptr + blk.to(tl.int64) * TN + rem, mask=k_ok, other=0.0)
        acc += tl.sum(gv.to(ACC) * w.to(ACC)[None, :], axis=1)

    gi_off = (b.to(tl.int64) * CIN + ci) * (H * W) + pix
    tl.store(gi_ptr + gi_off, acc.to(gi_ptr.dtype.element_ty), mask=m_ok & run_m)


@triton.jit
def _in_image_u32(ok, ih, iw, H, W):
    """``_in_image`` with one unsigned compare per axis (a negative index
    wraps above H): fewer live values in grad-weight's [M, P] masks."""
    return ok & (ih.to(tl.uint32) < H.to(tl.uint32)) & (iw.to(tl.uint32) < W.to(tl.uint32))


@triton.jit
def _row_m_tile(row_ptr, M_MAX, ROWS_PER_GROUP, BLOCK_M: tl.constexpr):
    """Grad-weight's program axis 0 as (block row r, its M tile of at most
    M_MAX rows a block row): r, the tile, r's group and its row in the
    group, its first block and kept-block count, the tile's M offsets."""
    tiles = tl.cdiv(M_MAX, BLOCK_M)
    r = tl.program_id(0) // tiles
    tile = tl.program_id(0) - r * tiles
    g = r // ROWS_PER_GROUP
    lo = tl.load(row_ptr + r)
    kr = tl.load(row_ptr + r + 1) - lo
    return r, tile, g, r - g * ROWS_PER_GROUP, lo, kr, tile * BLOCK_M + tl.arange(0, BLOCK_M)


_GRAD_WEIGHT_INTS = ["P", "C_IN_G", "H", "W", "OH", "OW", "COUT_G", "ROWS_PER_GROUP",
                     "SPLIT_P", "PART_STRIDE", "sxb", "sxc", "sxh", "sxw", "sgb", "sgc", "sgh", "sgw",
                     "STRIDE_H", "STRIDE_W", "PAD_H", "PAD_W", "DIL_H", "DIL_W", "P_LOG2", "K_LOG2"]


@triton.jit(do_not_specialize=_GRAD_WEIGHT_INTS)
def _grad_weight_kernel(
    x_ptr, go_ptr, row_ptr, col_idx, part_ptr,
    P, C_IN_G, H, W, OH, OW, COUT_G, ROWS_PER_GROUP, SPLIT_P, PART_STRIDE,
    sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    STRIDE_H, STRIDE_W, PAD_H, PAD_W, DIL_H, DIL_W,
    P_LOG2, K_LOG2,  # autotune key only
    KH: tl.constexpr, KW: tl.constexpr, N: tl.constexpr, X_CL: tl.constexpr,
    GO_CL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # One block row's weight gradient is one GEMM, [(taps x its blocks), P]
    # x [P, N]: M = its kept (tap, block) pairs, tap-major (every (block, tap)
    # is one M row, no tap padding), B = grad_out of its N channels, shared by
    # all of them. Program (row, M tile) x pixel split: the split's partial
    # sums go to part_ptr[split] (gw itself when there is one split), summed
    # in split order by _sum_splits_kernel: deterministic, no atomics.
    T: tl.constexpr = KH * KW
    # a row has at most C_IN_G blocks
    r, tile, g, q, lo, kr, offs_m = _row_m_tile(row_ptr, C_IN_G * T, ROWS_PER_GROUP, BLOCK_M)
    m_ok = offs_m < kr * T
    tap = offs_m // tl.maximum(kr, 1)
    blk = lo + offs_m - tap * kr
    kh = tap // KW
    kw = tap - kh * KW
    col = tl.load(col_idx + blk, mask=m_ok, other=0)
    dh = kh * DIL_H
    dw = kw * DIL_W
    x_m = (g * C_IN_G + col).to(tl.int64) * sxc + dh.to(tl.int64) * sxh + dw.to(tl.int64) * sxw

    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < tl.minimum(COUT_G - q * N, N)  # padded lanes: load 0, store exactly 0
    go_n = (g * COUT_G + q * N + offs_n).to(tl.int64) * sgc

    p_lo = tl.program_id(1) * SPLIT_P
    p_end = tl.minimum(p_lo + SPLIT_P, P)
    p_hi = tl.where(tile * BLOCK_M < kr * T, p_end, p_lo)  # M tiles past the row: no work
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    for p0 in range(p_lo, p_hi, BLOCK_P):
        offs_p = p0 + tl.arange(0, BLOCK_P)
        p_ok = offs_p < p_end
        b, _, oh, ow = _split_pixels(offs_p, OH, OW)
        ih0 = oh * STRIDE_H - PAD_H
        iw0 = ow * STRIDE_W - PAD_W
        bl = b.to(tl.int64)
        x_p = bl * sxb + ih0.to(tl.int64) * sxh + iw0.to(tl.int64) * sxw
        go_p = bl * sgb + oh.to(tl.int64) * sgh + ow.to(tl.int64) * sgw
        if X_CL:  # channels innermost in memory: threads along M (tap-major: channels)
            a_ok = _in_image_u32(p_ok[:, None] & m_ok[None, :], ih0[:, None] + dh[None, :],
                                 iw0[:, None] + dw[None, :], H, W)
            a = tl.trans(tl.load(x_ptr + x_p[:, None] + x_m[None, :], mask=a_ok, other=0.0))
        else:  # NCHW: threads along the pixels, coalesced
            a_ok = _in_image_u32(m_ok[:, None] & p_ok[None, :], dh[:, None] + ih0[None, :],
                                 dw[:, None] + iw0[None, :], H, W)
            a = tl.load(x_ptr + x_m[:, None] + x_p[None, :], mask=a_ok, other=0.0)
        if GO_CL:
            gv = tl.load(go_ptr + go_p[:, None] + go_n[None, :],
                         mask=p_ok[:, None] & n_ok[None, :], other=0.0)
        else:
            gv = tl.trans(tl.load(go_ptr + go_n[:, None] + go_p[None, :],
                                  mask=n_ok[:, None] & p_ok[None, :], other=0.0))
        acc = tl.dot(a, gv, acc, input_precision="ieee")

    # Padded lanes load 0 from grad_out, but 0 * a NaN/Inf of x is NaN: zero
    # them explicitly (they are no weight; their gradient is exactly 0).
    acc = tl.where(n_ok[None, :], acc, 0.0)
    part = (tl.program_id(1).to(tl.int64) * PART_STRIDE
            + ((blk.to(tl.int64) * T + tap) * N)[:, None] + offs_n[None, :])
    tl.store(part_ptr + part, acc.to(part_ptr.dtype.element_ty),
             mask=m_ok[:, None] & (offs_n < N)[None, :])


_GRAD_WEIGHT_SHIFT_INTS = ["PIN", "C_IN_G", "H", "W", "OH", "OW", "COUT_G", "ROWS_PER_GROUP",
                           "SPLIT_P", "PART_STRIDE", "sxb", "sxc", "sxh", "sxw", "sgb", "sgc", "sgh", "sgw",
                           "PAD_H", "PAD_W", "DIL_H", "DIL_W", "P_LOG2", "K_LOG2"]


@triton.jit
def _shift_tap(acc, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW, sgh, sgw, DH, DW,
               GO_CL: tl.constexpr):
    """One tap's dot of grad-weight's shift form: input pixel (ih, iw) pairs
    with grad_out pixel (ih - DH, iw - DW) where that exists. A is zeroed
    where it does not, as B is: a NaN/Inf of x meets only the grad_out
    values the conv pairs it with (exact, as the reference)."""
    oh = ih - DH
    ow = iw - DW
    valid = q_ok & (oh.to(tl.uint32) < OH.to(tl.uint32)) & (ow.to(tl.uint32) < OW.to(tl.uint32))
    go_q = go_b + oh.to(tl.int64) * sgh + ow.to(tl.int64) * sgw
    if GO_CL:
        gv = tl.load(go_ptr + go_q[:, None] + go_n[None, :], mask=valid[:, None] & n_ok[None, :],
                     other=0.0)
    else:
        gv = tl.trans(tl.load(go_ptr + go_n[:, None] + go_q[None, :],
                              mask=n_ok[:, None] & valid[None, :], other=0.0))
    return tl.dot(tl.where(valid[None, :], a, 0.0), gv, acc, input_precision="ieee")


@triton.jit
def _shift_row(acc0, acc1, acc2, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW, sgh, sgw,
               KH_ROW: tl.constexpr, PAD_H, PAD_W, DIL_H, DIL_W, GO_CL: tl.constexpr):
    """The three taps of kernel row KH_ROW, each into its own accumulator."""
    dh = KH_ROW * DIL_H - PAD_H
    acc0 = _shift_tap(acc0, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW, sgh, sgw, dh, -PAD_W, GO_CL)
    acc1 = _shift_tap(acc1, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW, sgh, sgw, dh,
                      DIL_W - PAD_W, GO_CL)
    acc2 = _shift_tap(acc2, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW, sgh, sgw, dh,
                      2 * DIL_W - PAD_W, GO_CL)
    return acc0, acc1, acc2


@triton.jit
def _store_row(part_ptr, acc0, acc1, acc2, part_m, n_ok, offs_n, m_ok, KH_ROW: tl.constexpr,
               N: tl.constexpr):
    """Kernel row KH_ROW's three taps into the partial sums; padded lanes
    exactly 0 (0 * a NaN of x would be NaN)."""
    mask = m_ok[:, None] & (offs_n < N)[None, :]
    base = part_ptr + (part_m + 3 * KH_ROW * N)[:, None] + offs_n[None, :]
    tl.store(base, tl.where(n_ok[None, :], acc0, 0.0).to(part_ptr.dtype.element_ty), mask=mask)
    tl.store(base + N, tl.where(n_ok[None, :], acc1, 0.0).to(part_ptr.dtype.element_ty), mask=mask)
    tl.store(base + 2 * N, tl.where(n_ok[None, :], acc2, 0.0).to(part_ptr.dtype.element_ty), mask=mask)


@triton.jit(do_not_specialize=_GRAD_WEIGHT_SHIFT_INTS)
def _grad_weight_shift_kernel(
    x_ptr, go_ptr, row_ptr, col_idx, part_ptr,
    PIN, C_IN_G, H, W, OH, OW, COUT_G, ROWS_PER_GROUP, SPLIT_P, PART_STRIDE,
    sxb, sxc, sxh, sxw, sgb, sgc, sgh, sgw,
    PAD_H, PAD_W, DIL_H, DIL_W,
    P_LOG2, K_LOG2,  # autotune key only
    N: tl.constexpr, X_CL: tl.constexpr, GO_CL: tl.constexpr, ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_P: tl.constexpr,
):
    # 3x3, stride 1 (benchmarks/gpu_kernels.md, "The ldmatrix design",
    # grad-weight): M = a block row's kept blocks, K = input pixels, N = its
    # lanes, all 9 taps in 9 accumulators. A (x of the blocks' channels) is
    # loaded once per K tile with no padding test and serves the 9 dots;
    # each tap's B is grad_out shifted by the tap. Program (row, M tile) x
    # split of the input pixels; partial sums as _grad_weight_kernel's.
    r, tile, g, q, lo, kr, offs_m = _row_m_tile(row_ptr, C_IN_G, ROWS_PER_GROUP, BLOCK_M)
    m_ok = offs_m < kr
    blk = lo + offs_m
    col = tl.load(col_idx + blk, mask=m_ok, other=0)
    x_m = (g * C_IN_G + col).to(tl.int64) * sxc

    offs_n = tl.arange(0, BLOCK_N)
    n_ok = offs_n < tl.minimum(COUT_G - q * N, N)
    go_n = (g * COUT_G + q * N + offs_n).to(tl.int64) * sgc

    p_lo = tl.program_id(1) * SPLIT_P
    p_end = tl.minimum(p_lo + SPLIT_P, PIN)
    p_hi = tl.where(tile * BLOCK_M < kr, p_end, p_lo)  # M tiles past the row: no work
    z = tl.zeros([BLOCK_M, BLOCK_N], dtype=ACC)
    a00, a01, a02, a10, a11, a12, a20, a21, a22 = z, z, z, z, z, z, z, z, z
    for q0 in range(p_lo, p_hi, BLOCK_P):
        offs_q = q0 + tl.arange(0, BLOCK_P)
        q_ok = offs_q < p_end
        b, _, ih, iw = _split_pixels(offs_q, H, W)
        bl = b.to(tl.int64)
        x_q = bl * sxb + ih.to(tl.int64) * sxh + iw.to(tl.int64) * sxw
        if X_CL:
            a = tl.trans(tl.load(x_ptr + x_q[:, None] + x_m[None, :], mask=q_ok[:, None] & m_ok[None, :],
                                 other=0.0))
        else:
            a = tl.load(x_ptr + x_m[:, None] + x_q[None, :], mask=m_ok[:, None] & q_ok[None, :], other=0.0)
        go_b = bl * sgb
        a00, a01, a02 = _shift_row(a00, a01, a02, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW,
                                   sgh, sgw, 0, PAD_H, PAD_W, DIL_H, DIL_W, GO_CL)
        a10, a11, a12 = _shift_row(a10, a11, a12, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW,
                                   sgh, sgw, 1, PAD_H, PAD_W, DIL_H, DIL_W, GO_CL)
        a20, a21, a22 = _shift_row(a20, a21, a22, a, go_ptr, go_b, go_n, ih, iw, q_ok, n_ok, OH, OW,
                                   sgh, sgw, 2, PAD_H, PAD_W, DIL_H, DIL_W, GO_CL)

    part_m = tl.program_id(1).to(tl.int64) * PART_STRIDE + blk.to(tl.int64) * 9 * N
    _store_row(part_ptr, a00, a01, a02, part_m, n_ok, offs_n, m_ok, 0, N)
    _store_row(part_ptr, a10, a11, a12, part_m, n_ok, offs_n, m_ok, 1, N)
    _store_row(part_ptr, a20, a21, a22, part_m, n_ok, offs_n, m_ok, 2, N)


@triton.jit
def _sum_splits_kernel(part_ptr, gw_ptr, NUMEL, SPLITS, BLOCK: tl.constexpr):
    # gw = the splits' partial sums added in split order (deterministic).
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < NUMEL
    acc = tl.load(part_ptr + offs, mask=ok, other=0.0)
    for s in range(1, SPLITS):
        acc += tl.load(part_ptr + s * NUMEL + offs, mask=ok, other=0.0)
    tl.store(gw_ptr + offs, acc.to(gw_ptr.dtype.element_ty), mask=ok)


# ---------------------------------------------------------------------------
# launch configs
# ---------------------------------------------------------------------------
def _forward_fits(cfg: dict, n: int, channels_last: bool) -> bool:
    """Whether a forward config stays within 255 registers on sm_90: with
    channels_last loads (along K, ~32 pixels a thread), single-row 128-pixel
    tiles spill at N >= 32 with 4 warps or 64-deep K steps (872-1112 B,
    benchmarks/results/gpu-sm90/triton_sm90.json)."""
    big = cfg["BLOCK_M"] == 128 and cfg["ROWS"] == 1
    return not (channels_last and n >= 32 and big)


_forward = _Launcher(
    _forward_kernel,
    [_cfg(4, 3, BLOCK_M=64, BLOCK_K=32, ROWS=2), _cfg(4, 3, BLOCK_M=128, BLOCK_K=32, ROWS=1),
     _cfg(8, 3, BLOCK_M=128, BLOCK_K=32, ROWS=2), _cfg(4, 4, BLOCK_M=64, BLOCK_K=64, ROWS=4),
     _cfg(8, 4, BLOCK_M=128, BLOCK_K=64, ROWS=1)],
    key=["P_LOG2", "K_LOG2", "N", "KH", "KW", "CL"],
    wide=[_cfg(4, 2, BLOCK_M=64, BLOCK_K=16, ROWS=1), _cfg(4, 2, BLOCK_M=32, BLOCK_K=16, ROWS=2)],
    fits=lambda cfg, kw: _forward_fits(cfg, kw.get("N", 0), kw.get("CL", False)),
)
_grad_input = _Launcher(
    _grad_input_kernel,
    [_cfg(4, 3, BLOCK_M=64, BLOCK_C=32), _cfg(4, 3, BLOCK_M=64, BLOCK_C=128),
     _cfg(8, 3, BLOCK_M=128, BLOCK_C=128), _cfg(4, 4, BLOCK_M=64, BLOCK_C=64),
     _cfg(8, 4, BLOCK_M=128, BLOCK_C=64)],
    key=["P_LOG2", "C_LOG2", "N", "KH", "KW", "CL"],
    wide=[_cfg(4, 2, BLOCK_M=32, BLOCK_C=16), _cfg(4, 2, BLOCK_M=16, BLOCK_C=32)],
)
# Only runs when grad_out holds a NaN/Inf: one config (tuning it would time
# the launches that do nothing).
_grad_input_exact = _Launcher(_grad_input_exact_kernel, [_cfg(4, BLOCK_M=64, BLOCK_K=16)], key=[])
_grad_weight = _Launcher(
    _grad_weight_kernel,
    [_cfg(4, 3, BLOCK_M=64, BLOCK_P=32), _cfg(8, 3, BLOCK_M=128, BLOCK_P=32),
     _cfg(8, 3, BLOCK_M=64, BLOCK_P=64)],
    key=["P_LOG2", "K_LOG2", "N", "KH", "KW", "X_CL", "GO_CL"],
    wide=[_cfg(4, 2, BLOCK_M=32, BLOCK_P=32), _cfg(4, 2, BLOCK_M=64, BLOCK_P=16)],
)
_grad_weight_shift = _Launcher(
    _grad_weight_shift_kernel,
    # 9 accumulators: 4 warps at M = 64 spill (0.5-2.6 KB), 8 do not
    [_cfg(8, 3, BLOCK_M=64, BLOCK_P=32)],
    key=["P_LOG2", "K_LOG2", "N", "X_CL", "GO_CL"],
    wide=[_cfg(4, 2, BLOCK_M=16, BLOCK_P=16)],
    fits=lambda cfg, kw: kw.get("N", 0) <= 32,  # grad_weight() takes it only there
)
_sum_splits = _Launcher(_sum_splits_kernel, [_cfg(4, BLOCK=1024)], key=[])

# Grad-weight splits the pixels (its K) so that about _GW_PROGRAMS programs
# share a layer (several waves on an H200's 132 SMs), each split at least
# _GW_MIN_SPLIT pixels (fewer would write more partial sums than they read).
_GW_PROGRAMS = 1024
_GW_MIN_SPLIT = 128
_GW_MAX_SPLITS = 256
# The shift form takes a block row's kept blocks as its M tile (64 on a
# GPU): below this many a row on average, the general kernel's (tap, block)
# pairs fill the tiles better (gpu_model.py: the two cross between 16 and
# 26 kept blocks at N = 32).
_GW_SHIFT_MIN_KEPT = 24


# ---------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------
def _block_n(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot needs every dim >= 16


def forward(
    x: torch.Tensor,
    values: torch.Tensor,
    topo: BlockTopology,
    bias: Optional[torch.Tensor],
    conv: ConvArgs,
) -> torch.Tensor:
    """``[B, Cout, OH, OW]`` output of the sparse conv, in ``x``'s memory
    format (channels_last when ``x`` is, as the op returns it: its copy to
    the input's layout is then a no-op)."""
    cl = channels_last_like(x)
    out, p = _forward_output(x, values, topo, conv,
                             torch.channels_last if cl else torch.contiguous_format)
    if p == 0:
        return out
    cin, h, w = x.shape[1:]
    cout, oh, ow = out.shape[1:]
    kh, kw = topo.kernel_size
    n = topo.n
    rows = topo.row_ptr.numel() - 1
    _forward(
        lambda meta: (triton.cdiv(p, meta["BLOCK_M"]),
                      _programs(conv.groups * triton.cdiv(topo.rows_per_group, meta["ROWS"]))),
        x, values.contiguous(), topo.row_ptr, topo.col_idx,
        bias.contiguous() if bias is not None else out, out,
        p, cin // conv.groups, h, w, oh, ow, cout // conv.groups, topo.rows_per_group,
        *x.stride(), *out.stride(), *_conv_scalars(conv),
        p.bit_length(), (topo.nnzb // max(rows, 1)).bit_length(),
        KH=kh, KW=kw, N=n, HAS_BIAS=bias is not None, CL=cl,
        ACC=_ACC[x.dtype], BLOCK_N=_block_n(n),
    )
    return out


def grad_input(
    grad_out: torch.Tensor,
    values: torch.Tensor,
    topo: BlockTopology,
    conv: ConvArgs,
    in_hw: tuple[int, int],
) -> torch.Tensor:
    """``[B, Cin, H, W]`` NCHW-contiguous gradient w.r.t. the input (the op
    returns it contiguous)."""
    gi, p = _grad_input_output(grad_out, values, topo, in_hw)
    if p == 0:
        return gi
    bsz, cout, oh, ow = grad_out.shape
    cin, h, w = gi.shape[1:]
    cin_g = cin // conv.groups
    kh, kw = topo.kernel_size
    (sh, sw), n = conv.stride, topo.n
    ph_h, ph_w = -(-h // sh), -(-w // sw)  # pixels of the largest stride phase
    steps = (sh // math.gcd(sh, conv.dilation[0]), sw // math.gcd(sw, conv.dilation[1]))
    pix = bsz * ph_h * ph_w
    values, flag = values.contiguous(), _nonfinite(grad_out)
    args = (grad_out, values, topo.col_ptr, topo.block_idx, topo.block_row, gi, flag)
    common = dict(KH=kh, KW=kw, N=n, ACC=_ACC[grad_out.dtype])
    _grad_input(
        lambda meta: (sh * sw * triton.cdiv(pix, meta["BLOCK_M"]),
                      _programs(conv.groups * triton.cdiv(cin_g, meta["BLOCK_C"]))),
        *args, pix, cin, cin_g, h, w, oh, ow, cout // conv.groups, topo.rows_per_group,
        ph_h, ph_w, *steps, *grad_out.stride(), *_conv_scalars(conv),
        p.bit_length(), cin_g.bit_length(), CL=channels_last_like(grad_out),
        BLOCK_K=max(16, min(triton.next_power_of_2(n), 32)), **common,
    )
    _grad_input_exact(
        lambda meta: (triton.cdiv(p, meta["BLOCK_M"]), _programs(cin)),
        *args, p, cin, cin_g, h, w, oh, ow, cout // conv.groups, topo.rows_per_group,
        *grad_out.stride(), *_conv_scalars(conv), **common,
    )
    return gi


def grad_weight(
    x: torch.Tensor,
    grad_out: torch.Tensor,
    topo: BlockTopology,
    conv: ConvArgs,
) -> torch.Tensor:
    """``[nnzb, Kh, Kw, N]`` gradient w.r.t. the kept values (padded lanes 0)."""
    _check_grad_weight(x, grad_out)
    bsz, cin, h, w = x.shape
    cout, oh, ow = grad_out.shape[1:]
    kh, kw = topo.kernel_size
    n = topo.n
    nnzb = topo.nnzb
    gw = torch.empty(nnzb, kh, kw, n, device=x.device, dtype=x.dtype)
    if nnzb == 0:
        return gw
    rows = topo.row_ptr.numel() - 1
    cin_g = cin // conv.groups
    # The shift form (3x3, stride 1, N <= 32: nine [64 x N] accumulators)
    # runs K over the input pixels, the general one over the output pixels.
    # Its M tiles are a row's blocks, so it needs rows that keep enough.
    shift = ((kh, kw) == (3, 3) and tuple(conv.stride) == (1, 1) and n <= 32
             and nnzb >= _GW_SHIFT_MIN_KEPT * rows)
    p = bsz * (h * w if shift else oh * ow)
    m_per_block = 1 if shift else kh * kw  # M rows a kept block makes
    # Splits: from the M tiles there are (at BLOCK_M=128; no host sync), a
    # multiple of 128 pixels each, the last one ragged.
    m_tiles = triton.cdiv(nnzb * m_per_block, 128) + rows
    splits = max(1, min(_GW_PROGRAMS // m_tiles, triton.cdiv(p, _GW_MIN_SPLIT), _GW_MAX_SPLITS))
    split_p = triton.cdiv(triton.cdiv(p, splits), 128) * 128 if p else 1
    splits = max(1, triton.cdiv(p, split_p))
    part = gw if splits == 1 else torch.empty(splits, gw.numel(), device=x.device,
                                              dtype=torch.float64 if x.dtype == torch.float64
                                              else torch.float32)
    launcher, scalars, consts = ((_grad_weight_shift, (*conv.padding, *conv.dilation), {}) if shift else
                                 (_grad_weight, _conv_scalars(conv), dict(KH=kh, KW=kw)))
    launcher(
        lambda meta: (rows * triton.cdiv(cin_g * m_per_block, meta["BLOCK_M"]), splits),
        x, grad_out, topo.row_ptr, topo.col_idx, part,
        p, cin_g, h, w, oh, ow, cout // conv.groups, topo.rows_per_group, split_p, gw.numel(),
        *x.stride(), *grad_out.stride(), *scalars, p.bit_length(), (nnzb // rows).bit_length(),
        N=n, X_CL=channels_last_like(x), GO_CL=channels_last_like(grad_out), ACC=_ACC[x.dtype],
        BLOCK_N=_block_n(n), **consts,
    )
    if splits > 1:
        _sum_splits(lambda meta: (triton.cdiv(gw.numel(), meta["BLOCK"]),),
                    part, gw, gw.numel(), splits)
    return gw
