"""CPU emulation of the stripe CUDA kernels' index math (csrc/cuda/stripe/).

Nothing can run the CUDA kernels on a machine without a GPU, so this mirrors
forward_kernel, forward_mma_kernel, grad_input_kernel and grad_weight_kernel
(+ the split-K reduction) CTA by CTA: the same work decomposition, the same per-thread
staging indices (vectorised over the 256 threads), the same k-major shared
operands, micro-tile ownership (rows 4*ty+i, columns tx+16*j), lower_bound
runs, skipped taps, carried pixel counters and epilogue addressing. Memory,
outputs, the split-K count and reduction and the reference come from
scripts/cuda_emulation.py: a wrong offset reads a wrong value (or raises),
and an unwritten or doubly written output element is caught.
forward_mma_kernel moves
raw fp16 words and every mma.sync is rebuilt from the 32 lanes' registers with
the PTX ISA fragment tables, so a wrong register packing shows as a wrong sum.

Compared against float64 torch.nn.functional.conv2d (and its autograd) on the
decoded dense weight. Run directly for a sweep, or via
tests/test_stripe_cuda_emulation.py.
"""
from __future__ import annotations

import bisect
import sys

import numpy as np
from cuda_emulation import (TOLERANCE, Geo, Mem, Out, Reference, cdiv, inside, max_error,
                            reduce_splits, split_count)

kThreads, kTileM, kTileN = 256, 64, 64
TID = np.arange(kThreads)
TX, TY = TID % 16, TID // 16


def micro_tile(a, b, acc, active):
    """a, b: [BK, 68]; acc [256, 4, 4]; rows 4*ty+i, columns tx+16*j."""
    rows = 4 * TY[:, None] + np.arange(4)[None, :]  # [256, 4]
    cols = TX[:, None] + 16 * np.arange(4)[None, :]
    upd = np.einsum("kti,ktj->tij", a[:, rows], b[:, cols])
    acc += np.where(active[:, None, None], upd, 0.0)


def pixel_origin(geo, s, m):
    plane = geo.out_h * geo.out_w
    ok = m < geo.batch * plane
    b = m // max(plane, 1)
    p = m - b * plane
    oh = p // max(geo.out_w, 1)
    ow = p - oh * geo.out_w
    ih0 = oh * geo.stride_h - geo.pad_h
    iw0 = ow * geo.stride_w - geo.pad_w
    return ok, ih0, iw0, b * s[0] + ih0 * s[2] + iw0 * s[3]


def lower_bound(row, lo, hi, value):
    return bisect.bisect_left(row, value, lo, hi)


# ---- forward_kernel -------------------------------------------------------
def forward(geo, st, values, x: Mem, bias, BK=16, OC=128):
    cin_g, cout_g, taps = geo.cin_g, geo.cout_g, geo.taps
    plane = geo.out_h * geo.out_w
    out = Out(geo.batch * geo.cout * plane)
    ranges, ptiles = cdiv(cout_g, OC), cdiv(geo.batch * plane, kTileN)
    kAIters, kBRows = BK * kTileM // kThreads, kThreads // kTileN
    lp, lk = TID % kTileN, TID // kTileN
    vflat = values.reshape(-1)
    srow = list(st["stripe_row"])
    for w in range(geo.groups * ranges * ptiles):
        rng, m0, g = w % ranges, ((w // ranges) % ptiles) * kTileN, w // ranges // ptiles
        obase = g * cout_g + rng * OC
        nout = min(cout_g - rng * OC, OC)
        sums = np.zeros((OC, kTileN))
        ok, ih0, iw0, off = pixel_origin(geo, x.s, m0 + lp)
        xg = g * cin_g * x.s[1]
        for tap in range(taps):
            col = g * taps + tap
            hi = st["tap_ptr"][col + 1]
            e_first = lower_bound(srow, st["tap_ptr"][col], hi, obase)
            e_end = lower_bound(srow, e_first, hi, obase + nout)
            if e_first == e_end:
                continue
            dy, dx = (tap // geo.kw) * geo.dil_h, (tap % geo.kw) * geo.dil_w
            in_img = ok & inside(ih0 + dy, iw0 + dx, geo)
            xoff = off + dy * x.s[2] + dx * x.s[3]
            for e0 in range(e_first, e_end, kTileM):
                nrows = min(e_end - e0, kTileM)
                wrow = []
                for q in range(kAIters):
                    r = (TID + q * kThreads) // BK
                    idx = np.array([st["stripe_idx"][e0 + rr] if rr < nrows else -1 for rr in r])
                    wrow.append(np.where(r < nrows, idx * cin_g, -1))
                acc = np.zeros((kThreads, 4, 4))
                for k0 in range(0, cin_g, BK):
                    a = np.full((BK, kTileM + 4), np.nan)  # unstaged cells poison
                    b = np.full((BK, kTileM + 4), np.nan)
                    for q in range(kAIters):
                        i = TID + q * kThreads
                        k, r = i % BK, i // BK
                        m = (wrow[q] >= 0) & (k0 + k < cin_g)
                        a[k, r] = np.where(m, vflat[np.where(m, wrow[q] + k0 + k, 0)], 0.0)
                    for k in range(0, BK):
                        sel = (lk <= k) & ((k - lk) % kBRows == 0)
                        m = in_img & (k0 + k < cin_g)
                        v = x.load(xg + xoff + (k0 + k) * x.s[1], m)
                        b[k, lp[sel]] = v[sel]
                    micro_tile(a, b, acc, 4 * TY < nrows)
                for i in range(4):
                    r = 4 * TY + i
                    for t in np.nonzero(r < nrows)[0]:
                        o = srow[e0 + r[t]] - obase
                        assert 0 <= o < nout
                        for j in range(4):
                            sums[o, TX[t] + 16 * j] += acc[t, i, j]
        m = m0 + lp
        valid = m < geo.batch * plane
        bb = m // max(plane, 1)
        base = (bb * geo.cout + obase) * plane + (m - bb * plane)
        for o in range(nout):
            sel = valid & (lk <= o) & ((o - lk) % kBRows == 0)
            v = sums[o, lp] + (bias[obase + o] if bias is not None else 0.0)
            out.store(base + o * plane, v, sel)
    return out


# ---- grad_input_kernel ----------------------------------------------------
def grad_input(geo, st, values, go: Mem, BK=16):
    cin_g, taps = geo.cin_g, geo.taps
    in_plane = geo.in_h * geo.in_w
    in_pixels = geo.batch * in_plane
    out = Out(geo.batch * geo.cin * in_plane)
    ctiles, ptiles = cdiv(cin_g, kTileM), cdiv(in_pixels, kTileN)
    kARows = kThreads // kTileM
    lane_c, lp, lk = TID % kTileM, TID % kTileN, TID // kTileN
    vflat = values.reshape(-1)
    for w in range(geo.groups * ctiles * ptiles):
        c0, m0, g = (w % ctiles) * kTileM, ((w // ctiles) % ptiles) * kTileN, w // ctiles // ptiles
        nc = min(cin_g - c0, kTileM)
        m = m0 + lp
        px_ok = m < in_pixels
        b = np.where(px_ok, m // in_plane, 0)
        rem = m - b * in_plane
        ih = np.where(px_ok, rem // geo.in_w, 0)
        iw = np.where(px_ok, rem - ih * geo.in_w, 0)
        acc = np.zeros((kThreads, 4, 4))
        for tap in range(taps):
            kh, kw = tap // geo.kw, tap % geo.kw
            th = ih + geo.pad_h - kh * geo.dil_h
            tw = iw + geo.pad_w - kw * geo.dil_w
            # C division truncates toward zero
            oh = np.trunc(th / geo.stride_h).astype(np.int64)
            ow = np.trunc(tw / geo.stride_w).astype(np.int64)
            hit = px_ok & (th >= 0) & (tw >= 0) & (th % geo.stride_h == 0) & \
                (tw % geo.stride_w == 0) & (oh < geo.out_h) & (ow < geo.out_w)
            if not hit.any():
                continue
            goff = oh * go.s[2] + ow * go.s[3]
            col = g * taps + tap
            e_end = st["tap_ptr"][col + 1]
            for e0 in range(st["tap_ptr"][col], e_end, BK):
                ne = min(e_end - e0, BK)
                a = np.full((BK, kTileM + 4), np.nan)
                bs = np.full((BK, kTileM + 4), np.nan)
                for k in range(BK):
                    sel = (lk <= k) & ((k - lk) % kARows == 0)
                    if k < ne:
                        sidx, srow = st["stripe_idx"][e0 + k], st["stripe_row"][e0 + k]
                        ma = lane_c < nc
                        va = np.where(ma, vflat[np.where(ma, sidx * cin_g + c0 + lane_c, 0)], 0.0)
                        vb = go.load(b * go.s[0] + goff + srow * go.s[1], hit)
                    else:
                        va = np.zeros(kThreads)
                        vb = np.zeros(kThreads)
                    a[k, lane_c[sel]] = va[sel]
                    bs[k, lp[sel]] = vb[sel]
                micro_tile(a, bs, acc, 4 * TY < nc)
        for j in range(4):
            mj = m0 + TX + 16 * j
            bj = mj // in_plane
            for i in range(4):
                sel = (mj < in_pixels) & (4 * TY + i < nc)
                dst = (bj * geo.cin + g * cin_g + c0) * in_plane + (mj - bj * in_plane) + \
                    (4 * TY + i) * in_plane
                out.store(dst, acc[:, i, j], sel)
    return out


# ---- grad_weight_kernel + reduce_splits_kernel ----------------------------
def grad_weight(geo, st, x: Mem, go: Mem, sms=132, BK=16):
    cin_g, taps, nnz = geo.cin_g, geo.taps, len(st["stripe_idx"])
    total = nnz * cin_g
    out = Out(total)
    if total == 0:
        return out
    plane = geo.out_h * geo.out_w
    pixels = geo.batch * plane
    if pixels == 0:
        out.store(np.arange(total), np.zeros(total), np.ones(total, bool))
        return out
    columns = geo.groups * taps
    ctiles, rtiles = cdiv(cin_g, kTileN), cdiv(geo.cout_g, kTileM)
    busy = columns * cdiv(cdiv(nnz, columns), kTileM) * ctiles
    splits = split_count(busy, cdiv(pixels, 32 * BK), sms)
    split_px = cdiv(cdiv(pixels, splits), BK) * BK
    dst = Out(splits * total) if splits > 1 else out
    kIters, kRowStep = BK * kTileM // kThreads, kThreads // BK
    lk, lr = TID % BK, TID // BK
    for w in range(splits * columns * rtiles * ctiles):
        rest = w
        c0 = (rest % ctiles) * kTileN; rest //= ctiles
        rt = rest % rtiles; rest //= rtiles
        col, split = rest % columns, rest // columns
        e_end = st["tap_ptr"][col + 1]
        e0 = st["tap_ptr"][col] + rt * kTileM
        if e0 >= e_end:
            continue
        nrows, nc = min(e_end - e0, kTileM), min(cin_g - c0, kTileN)
        g, tap = col // taps, col % taps
        dy = (tap // geo.kw) * geo.dil_h - geo.pad_h
        dx = (tap % geo.kw) * geo.dil_w - geo.pad_w
        row_off, ch_off = [], []
        for q in range(kIters):
            r = lr + q * kRowStep
            row_off.append(np.array([st["stripe_row"][e0 + rr] * go.s[1] if rr < nrows else -1 for rr in r]))
            ch_off.append(np.where(r < nc, (g * cin_g + c0 + r) * x.s[1], -1))
        acc = np.zeros((kThreads, 4, 4))
        p_begin = split * split_px
        p_end = min(p_begin + split_px, pixels)
        if p_begin < p_end:
            p = p_begin + lk
            b = p // plane
            oh = (p - b * plane) // geo.out_w
            ow = p - b * plane - oh * geo.out_w
            for k0 in range(p_begin, p_end, BK):
                p_ok = p < p_end
                ih, iw = oh * geo.stride_h + dy, ow * geo.stride_w + dx
                x_ok = p_ok & inside(ih, iw, geo)
                gbase = b * go.s[0] + oh * go.s[2] + ow * go.s[3]
                xbase = b * x.s[0] + ih * x.s[2] + iw * x.s[3]
                a = np.full((BK, kTileM + 4), np.nan)
                bs = np.full((BK, kTileM + 4), np.nan)
                for q in range(kIters):
                    r = lr + q * kRowStep
                    a[lk, r] = go.load(gbase + row_off[q], p_ok & (row_off[q] >= 0))
                    bs[lk, r] = x.load(xbase + ch_off[q], x_ok & (ch_off[q] >= 0))
                micro_tile(a, bs, acc, 4 * TY < nrows)
                p = p + BK
                ow = ow + BK
                for t in range(kThreads):  # the per-thread while loop
                    while ow[t] >= geo.out_w:
                        ow[t] -= geo.out_w
                        oh[t] += 1
                        if oh[t] == geo.out_h:
                            oh[t] = 0
                            b[t] += 1
        for i in range(4):
            r = 4 * TY + i
            rows = np.array([st["stripe_idx"][e0 + rr] if rr < nrows else 0 for rr in r])
            for j in range(4):
                c = TX + 16 * j
                sel = (r < nrows) & (c < nc)
                dst.store(split * total + c0 + rows * cin_g + c, acc[:, i, j], sel)
    if splits > 1:
        reduce_splits(dst, splits, total, out)
    return out


# ---- forward_mma_kernel (stripe_forward_mma.cu), fp16 words ----------------
# PTX ISA fragment tables for mma.m16n8k16 (f16/bf16), independent of the kernel.
def ptx_a_coords(lane):
    """(row, col) of the 8 halves a0..a7 (4 regs, low half first)."""
    g, t = lane >> 2, lane % 4
    return [((g if (i < 2 or 4 <= i < 6) else g + 8), t * 2 + (i & 1) + (8 if i >= 4 else 0))
            for i in range(8)]


def ptx_b_coords(lane):
    g, t = lane >> 2, lane % 4
    return [(t * 2 + (i & 1) + (8 if i >= 2 else 0), g) for i in range(4)]  # (k, n)


def ptx_c_coords(lane):
    g, t = lane >> 2, lane % 4
    return [((g if i < 2 else g + 8), t * 2 + (i & 1)) for i in range(4)]


def halves(word):
    word = int(word)
    lo = np.array([word & 0xFFFF], np.uint16).view(np.float16)[0]
    hi = np.array([word >> 16], np.uint16).view(np.float16)[0]
    return float(lo), float(hi)


def mma_16816(d, a_regs, b_regs):
    """d[lane][4] += A*B with A (16x16) and B (16x8) assembled from the lanes."""
    A = np.zeros((16, 16))
    B = np.zeros((16, 8))
    for lane in range(32):
        ae = [h for w in a_regs[lane] for h in halves(w)]
        for (r, c), v in zip(ptx_a_coords(lane), ae):
            A[r, c] = v
        be = [h for w in b_regs[lane] for h in halves(w)]
        for (k, n), v in zip(ptx_b_coords(lane), be):
            B[k, n] = v
    D = A @ B
    for lane in range(32):
        for i, (r, c) in enumerate(ptx_c_coords(lane)):
            d[lane][i] += D[r, c]


def forward_mma(geo, st, values16, x16: Mem, bias):
    """values16 / x16.buf hold float16 values; the kernel moves raw 16-bit words."""
    kOC, kBK = 128, 32
    kLdw = kBK // 2 + 4
    cin_g, cout_g, taps = geo.cin_g, geo.cout_g, geo.taps
    plane = geo.out_h * geo.out_w
    out = Out(geo.batch * geo.cout * plane)
    ranges, ptiles = cdiv(cout_g, kOC), cdiv(geo.batch * plane, kTileN)
    kAWords, kBPairs = kTileM * (kBK // 2) // kThreads, kThreads // kTileN
    vbits = values16.astype(np.float16).reshape(-1).view(np.uint16).astype(np.int64)
    with np.errstate(over="ignore"):  # the 'padded' layout's filler becomes inf
        xbits = x16.buf.astype(np.float16).view(np.uint16).astype(np.int64)
    lp, lk = TID % kTileN, TID // kTileN
    warp = TID // 32
    wm, wn = warp % 4, warp // 4
    gq, tq = (TID % 32) // 4, TID % 4
    srow = list(st["stripe_row"])
    for w in range(geo.groups * ranges * ptiles):
        rng, m0, g = w % ranges, ((w // ranges) % ptiles) * kTileN, w // ranges // ptiles
        obase = g * cout_g + rng * kOC
        nout = min(cout_g - rng * kOC, kOC)
        sums = np.zeros((kOC, kTileN))
        ok, ih0, iw0, off = pixel_origin(geo, x16.s, m0 + lp)
        xg = g * cin_g * x16.s[1]
        for tap in range(taps):
            col = g * taps + tap
            hi_ = st["tap_ptr"][col + 1]
            e_first = lower_bound(srow, st["tap_ptr"][col], hi_, obase)
            e_end = lower_bound(srow, e_first, hi_, obase + nout)
            if e_first == e_end:
                continue
            dy, dx = (tap // geo.kw) * geo.dil_h, (tap % geo.kw) * geo.dil_w
            in_img = ok & inside(ih0 + dy, iw0 + dx, geo)
            xoff = off + dy * x16.s[2] + dx * x16.s[3]
            for e0 in range(e_first, e_end, kTileM):
                nrows = min(e_end - e0, kTileM)
                wrow = []
                for q in range(kAWords):
                    r = (TID + q * kThreads) // (kBK // 2)
                    idx = np.array([st["stripe_idx"][e0 + rr] if rr < nrows else 0 for rr in r])
                    wrow.append(np.where(r < nrows, idx * cin_g, -1))
                active = 16 * wm < nrows
                acc = np.zeros((kThreads, 4, 4))
                for k0 in range(0, cin_g, kBK):
                    sa = np.full((kTileM, kLdw), -1, np.int64)  # -1: never staged
                    sb = np.full((kTileN, kLdw), -1, np.int64)
                    for q in range(kAWords):
                        i = TID + q * kThreads
                        kp = i % (kBK // 2)
                        k = k0 + 2 * kp
                        have = wrow[q] >= 0
                        lo = np.where(have & (k < cin_g), vbits[np.where(have & (k < cin_g), wrow[q] + k, 0)], 0)
                        hi = np.where(have & (k + 1 < cin_g), vbits[np.where(have & (k + 1 < cin_g), wrow[q] + k + 1, 0)], 0)
                        sa[i // (kBK // 2), kp] = lo | (hi << 16)
                    for kp in range(kBK // 2):
                        sel = (lk <= kp) & ((kp - lk) % kBPairs == 0)
                        k = k0 + 2 * kp
                        base = xg + xoff + k * x16.s[1]
                        mlo, mhi = in_img & (k < cin_g), in_img & (k + 1 < cin_g)
                        lo = np.where(mlo, xbits[np.where(mlo, base, 0)], 0)
                        hi = np.where(mhi, xbits[np.where(mhi, base + x16.s[1], 0)], 0)
                        sb[lp[sel], kp] = (lo | (hi << 16))[sel]
                    assert (sa >= 0)[:, :kBK // 2].all() and (sb >= 0)[:, :kBK // 2].all()
                    for wi in range(8):
                        lanes = np.arange(32) + 32 * wi
                        if not active[lanes[0]]:
                            continue
                        for ks in range(kBK // 16):
                            c = ks * 8 + tq[lanes]
                            r = 16 * wm[lanes] + gq[lanes]
                            a_regs = np.stack([sa[r, c], sa[r + 8, c], sa[r, c + 4], sa[r + 8, c + 4]], 1)
                            for nt in range(4):
                                n = 32 * wn[lanes] + 8 * nt + gq[lanes]
                                b_regs = np.stack([sb[n, c], sb[n, c + 4]], 1)
                                d = acc[lanes, nt, :]
                                mma_16816(d, a_regs, b_regs)
                                acc[lanes, nt, :] = d
                for t in np.nonzero(active)[0]:
                    for h in range(2):
                        r = 16 * wm[t] + gq[t] + 8 * h
                        if r >= nrows:
                            continue
                        o = srow[e0 + r] - obase
                        assert 0 <= o < nout
                        for nt in range(4):
                            p = 32 * wn[t] + 8 * nt + 2 * tq[t]
                            sums[o, p] += acc[t, nt, 2 * h]
                            sums[o, p + 1] += acc[t, nt, 2 * h + 1]
        m = m0 + lp
        valid = m < geo.batch * plane
        bb = m // max(plane, 1)
        base = (bb * geo.cout + obase) * plane + (m - bb * plane)
        for o in range(nout):
            sel = valid & (lk <= o) & ((o - lk) % kBPairs == 0)
            v = sums[o, lp] + (bias[obase + o] if bias is not None else 0.0)
            out.store(base + o * plane, v, sel)
    return out


def check_mma_case(geo, density, order, seed=0):
    """Max abs error of forward_mma against float64 F.conv2d on fp16-rounded data."""
    import torch
    import torch.nn.functional as F
    rng = np.random.default_rng(seed)
    st, values, dense, rows, taps_ = make_stripes(rng, geo, density)
    values = values.astype(np.float16).astype(np.float64)
    dense = dense.astype(np.float16).astype(np.float64)
    x = rng.standard_normal((geo.batch, geo.cin, geo.in_h, geo.in_w)).astype(np.float16).astype(np.float64)
    bias = rng.standard_normal(geo.cout)
    y = F.conv2d(torch.tensor(x), torch.tensor(dense), torch.tensor(bias),
                 (geo.stride_h, geo.stride_w), (geo.pad_h, geo.pad_w),
                 (geo.dil_h, geo.dil_w), geo.groups).numpy().reshape(-1)
    fo = forward_mma(geo, st, values, Mem(x, order), bias)
    fo.assert_written_once("forward_mma")
    return max_error(fo.v, y)


MMA_CASES = [
    ((2, 40, 5, 6, 20, 3, 3, (1, 1), (1, 1), (1, 1), 1), 0.5, "nchw"),   # K tail 40 = 32 + 8
    ((1, 34, 4, 4, 140, 3, 3, (1, 1), (1, 1), (1, 1), 2), 0.8, "nhwc"),  # 2 ranges, odd tail
    ((2, 32, 7, 5, 70, 2, 3, (2, 1), (1, 2), (1, 2), 1), 0.95, "padded"), # run > 64 rows
]


# ---- driver -----------------------------------------------------------------
def make_stripes(rng, geo, density):
    keep = rng.random((geo.cout, geo.taps)) < density
    row_ptr = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    rows, taps_ = np.nonzero(keep)  # row-major: taps ascending within a row
    nnz = len(rows)
    group = rows // geo.cout_g
    column = group * geo.taps + taps_
    order = np.argsort(column, kind="stable")
    tap_ptr = np.concatenate([[0], np.cumsum(np.bincount(column, minlength=geo.groups * geo.taps))])
    st = dict(row_ptr=row_ptr, tap_idx=taps_, tap_ptr=[int(v) for v in tap_ptr],
              stripe_idx=[int(v) for v in order], stripe_row=[int(v) for v in rows[order]])
    values = rng.standard_normal((nnz, geo.cin_g))
    dense = np.zeros((geo.cout, geo.taps, geo.cin_g))
    dense[rows, taps_] = values
    dense = dense.transpose(0, 2, 1).reshape(geo.cout, geo.cin_g, geo.kh, geo.kw)
    return st, values, dense, rows, taps_


def check_case(geo, density, order, with_bias=True, seed=0, sms=132, bk=16, oc=128):
    """Max abs errors per pass; bk/oc: 16/128 for the fp32-accumulating
    instantiations, 8/64 for fp64."""
    rng = np.random.default_rng(seed)
    st, values, dense, rows, taps_ = make_stripes(rng, geo, density)
    ref = Reference(geo, dense, rng, with_bias)
    errs = {}

    fo = forward(geo, st, values, Mem(ref.x, order), ref.bias, BK=bk, OC=oc)
    fo.assert_written_once("forward")
    errs["forward"] = max_error(fo.v, ref.y)

    gi = grad_input(geo, st, values, Mem(ref.gy, order), BK=bk)
    gi.assert_written_once("grad_input")
    errs["grad_input"] = max_error(gi.v, ref.grad_x)

    gw = grad_weight(geo, st, Mem(ref.x, order), Mem(ref.gy, order), sms=sms, BK=bk)
    gw.assert_written_once("grad_weight")
    grad_w = ref.grad_weight.numpy().reshape(geo.cout, geo.cin_g, geo.taps).transpose(0, 2, 1)
    errs["grad_weight"] = max_error(gw.v, grad_w[rows, taps_].reshape(-1))
    return errs


CASES = [
    # (N, Cin, H, W, Cout, kh, kw, stride, pad, dil, groups), density, layout
    ((2, 5, 7, 6, 9, 3, 3, (1, 1), (1, 1), (1, 1), 1), 0.5, "nchw"),
    ((1, 70, 5, 5, 140, 3, 3, (1, 1), (1, 1), (1, 1), 1), 0.4, "nhwc"),   # >1 range, K tail
    ((2, 6, 9, 8, 4, 3, 2, (2, 3), (1, 0), (2, 1), 2), 0.7, "padded"),    # stride, dilation, groups
    ((3, 4, 6, 5, 4, 3, 3, (1, 1), (2, 2), (1, 1), 4), 0.6, "nchw"),     # depthwise
    ((2, 3, 4, 4, 5, 1, 1, (1, 1), (0, 0), (1, 1), 1), 1.0, "nhwc"),     # 1x1 dense
    ((1, 3, 5, 5, 6, 5, 5, (2, 2), (0, 0), (1, 1), 1), 0.0, "nchw"),     # nnz == 0
    ((0, 3, 5, 5, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1), 0.5, "nchw"),     # batch 0
    ((2, 8, 3, 3, 130, 2, 2, (3, 3), (0, 0), (1, 1), 1), 0.3, "padded"), # out 1x1, stride > kernel
    ((1, 2, 40, 40, 3, 3, 3, (1, 1), (1, 1), (1, 1), 1), 0.6, "nchw"),   # many pixels: split-K
]


def main() -> int:
    worst = 0.0
    for shape, density, order in CASES:
        for bk, oc in ((16, 128), (8, 64)):
            errs = check_case(Geo(*shape), density, order, bk=bk, oc=oc)
            worst = max(worst, *errs.values())
            print(shape, density, order, bk, {k: f"{v:.1e}" for k, v in errs.items()})
    for shape, density, order in MMA_CASES:
        err = check_mma_case(Geo(*shape), density, order)
        worst = max(worst, err)
        print("mma", shape, density, order, f"{err:.1e}")
    print("worst", worst)
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
