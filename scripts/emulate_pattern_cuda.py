"""CPU emulation of the pattern CUDA kernels' index math (csrc/cuda/pattern/).

Nothing can run the CUDA kernels on a machine without a GPU, so this mirrors
forward_kernel, grad_input_kernel and grad_weight_kernel (+ the split-K
reduction) CTA by CTA and warp by warp: the same work decomposition
(channel tiles fastest), the same lane-to-pixel map (lane l owns pixels
m0 + l + 32 j), the same PixelWalk carries, the 32-kernel metadata chunks
broadcast by __shfl_sync, the shared tap table (and the inline path past
kTapTable taps), the stride phases of grad-input, grad-weight's carried pixel
counters, its 4/8/16-accumulator sweeps, the __shfl_down_sync tree and the
warp-ordered block sum, and the split-K count and reduction. Lanes and
threads are numpy vectors. Memory is a flat buffer read through explicit
element strides (a wrong offset reads a wrong value, a 1e30 filler in the
'padded' layout, or raises), and outputs start as NaN with a write counter,
so an unwritten or doubly written element is caught.

Compared against float64 torch.nn.functional.conv2d (and its autograd) on
the decoded dense weight (Pattern.to_dense()). Run directly for the sweep,
or via tests/test_pattern_cuda_emulation.py.
"""
from __future__ import annotations

import sys

import numpy as np

# Constants of pattern_kernels.cuh / pattern_grad_weight.cu.
kThreads, kWarps, kPx = 256, 8, 4
kTilePx = 32 * kPx
kTapTable = 256
kNoRow = -(1 << 30) - 1
kVals, kMinPxPerThread = 16, 16
LANE = np.arange(32)
TID = np.arange(kThreads)


def cdiv(a, b):
    return -(-a // b)


class Geo:
    def __init__(self, n, cin, h, w, cout, kh, kw, stride, pad, dil, groups):
        self.batch, self.cin, self.in_h, self.in_w, self.cout = n, cin, h, w, cout
        self.kh, self.kw = kh, kw
        self.stride_h, self.stride_w = stride
        self.pad_h, self.pad_w = pad
        self.dil_h, self.dil_w = dil
        self.groups = groups
        self.out_h = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
        self.out_w = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
        self.out_h, self.out_w = max(self.out_h, 0), max(self.out_w, 0)

    taps = property(lambda s: s.kh * s.kw)
    cin_g = property(lambda s: s.cin // s.groups)
    cout_g = property(lambda s: s.cout // s.groups)


class Mem:
    """A flat buffer read through (n, c, h, w) element strides."""

    def __init__(self, t4, order):  # order: 'nchw', 'nhwc' or 'padded'
        n, c, h, w = t4.shape
        if order == "nchw":
            self.buf, self.s = t4.reshape(-1).copy(), (c * h * w, h * w, w, 1)
        elif order == "nhwc":
            self.buf, self.s = t4.transpose(0, 2, 3, 1).reshape(-1).copy(), (h * w * c, 1, w * c, c)
        else:  # every dimension padded: non-contiguous, the filler poisons
            big = np.full((n + 1, c + 1, h + 1, w + 2), 1e30)
            big[:n, :c, :h, :w] = t4
            self.buf = big.reshape(-1)
            self.s = ((c + 1) * (h + 1) * (w + 2), (h + 1) * (w + 2), w + 2, 1)

    def load(self, off, mask):
        off = np.where(mask, off, 0)
        if mask.any():
            assert off[mask].min() >= 0 and off[mask].max() < self.buf.size, "read out of range"
        return np.where(mask, self.buf[off], 0.0)


class Out:
    def __init__(self, size):
        self.v = np.full(size, np.nan)
        self.writes = np.zeros(size, np.int64)

    def store(self, idx, val, mask):
        idx, val = np.broadcast_to(idx, mask.shape)[mask], np.broadcast_to(val, mask.shape)[mask]
        assert idx.min(initial=0) >= 0 and idx.max(initial=-1) < self.v.size
        np.add.at(self.writes, idx, 1)
        self.v[idx] = val


class Reads:
    """An int32/values array whose reads are bounds-checked and counted."""

    def __init__(self, a):
        self.a = np.asarray(a)
        self.count = np.zeros(self.a.size, np.int64)

    def __getitem__(self, i):
        assert 0 <= i < self.a.size, f"index {i} outside [0, {self.a.size})"
        self.count[i] += 1
        return self.a[i].item()

    def gather(self, idx, mask):
        idx = np.where(mask, idx, 0)
        if mask.any():
            assert idx[mask].min() >= 0 and idx[mask].max() < self.a.size
            np.add.at(self.count, idx[mask], 1)
        return np.where(mask, self.a[idx] if self.a.size else 0, 0)


def tap_shift(geo, t):
    kh = t // geo.kw
    return kh * geo.dil_h, (t - kh * geo.kw) * geo.dil_w


def tap_table(geo):
    return [tap_shift(geo, t) for t in range(min(geo.taps, kTapTable))]


def tap_lookup(geo, table, t):
    return table[t] if t < kTapTable else tap_shift(geo, t)


def inside(y, x, geo):
    return (y >= 0) & (y < geo.in_h) & (x >= 0) & (x < geo.in_w)


class PixelWalk:
    """pattern_kernels.cuh PixelWalk, vectorised over the lanes."""

    def __init__(self, m, rows, cols):
        plane = rows * cols
        self.b = m // plane
        rem = m - self.b * plane
        self.y = rem // cols
        self.x = rem - self.y * cols
        self.dq = 32 // cols
        self.dr = 32 - self.dq * cols

    def step(self, rows, cols):
        self.x = self.x + self.dr
        self.y = self.y + self.dq
        wrap = self.x >= cols
        self.x = np.where(wrap, self.x - cols, self.x)
        self.y = np.where(wrap, self.y + 1, self.y)
        over = self.y >= rows
        wraps = np.where(over, self.y // rows, 0)
        self.b = self.b + wraps
        self.y = self.y - wraps * rows


def shfl(vec, lane):
    return vec[lane].item()


# ---- forward_kernel ---------------------------------------------------------
def forward(geo, t, values: Reads, x: Mem, bias):
    plane = geo.out_h * geo.out_w
    pixels = geo.batch * plane
    out = Out(geo.batch * geo.cout * plane)
    ctiles = cdiv(geo.cout, kWarps)
    work = ctiles * cdiv(pixels, kTilePx)
    if work == 0:
        return out
    table = tap_table(geo)
    for w in range(work):
        for warp in range(kWarps):
            o = (w % ctiles) * kWarps + warp
            if o >= geo.cout:
                continue
            m0 = (w // ctiles) * kTilePx + LANE
            ih0, iw0, off, acc = [], [], [], []
            pw = PixelWalk(m0, geo.out_h, geo.out_w)
            for j in range(kPx):
                if j > 0:
                    pw.step(geo.out_h, geo.out_w)
                ih0.append(np.where(m0 + 32 * j < pixels, pw.y * geo.stride_h - geo.pad_h, kNoRow))
                iw0.append(pw.x * geo.stride_w - geo.pad_w)
                off.append(pw.b * x.s[0] + ih0[j] * x.s[2] + iw0[j] * x.s[3])
                acc.append(np.zeros(32))
            xg = (o // geo.cout_g) * geo.cin_g * x.s[1]
            k_begin, k_end = t["row_ptr"][o], t["row_ptr"][o + 1]
            for k0 in range(k_begin, k_end, 32):
                kl = k0 + LANE
                have = kl < k_end
                my_c = t["chan_idx"].gather(kl, have)
                my_vb = t["value_ptr"].gather(kl, have)
                my_ve = t["value_ptr"].gather(kl + 1, have)
                for q in range(min(k_end - k0, 32)):
                    c, vb, ve = shfl(my_c, q), shfl(my_vb, q), shfl(my_ve, q)
                    xc = xg + c * x.s[1]
                    for v in range(vb, ve):
                        wv = values[v]
                        dy, dx = tap_lookup(geo, table, t["value_tap"][v])
                        toff = dy * x.s[2] + dx * x.s[3]
                        for j in range(kPx):
                            m = inside(ih0[j] + dy, iw0[j] + dx, geo)
                            acc[j] += wv * x.load(xc + off[j] + toff, m)
            bv = bias[o] if bias is not None else 0.0
            ps = PixelWalk(m0, geo.out_h, geo.out_w)
            for j in range(kPx):
                if j > 0:
                    ps.step(geo.out_h, geo.out_w)
                out.store((ps.b * geo.cout + o) * plane + ps.y * geo.out_w + ps.x,
                          acc[j] + bv, m0 + 32 * j < pixels)
    return out


# ---- grad_input_kernel ------------------------------------------------------
def tap_phase(geo, t):
    dy, dx = tap_shift(geo, t)
    return dy // geo.stride_h, dy % geo.stride_h, dx // geo.stride_w, dx % geo.stride_w


def grad_input(geo, t, values: Reads, go: Mem):
    in_plane = geo.in_h * geo.in_w
    in_pixels = geo.batch * in_plane
    out = Out(geo.batch * geo.cin * in_plane)
    ctiles = cdiv(geo.cin, kWarps)
    work = ctiles * cdiv(in_pixels, kTilePx)
    if work == 0:
        return out
    table = [tap_phase(geo, tap) for tap in range(min(geo.taps, kTapTable))]
    for w in range(work):
        for warp in range(kWarps):
            c = (w % ctiles) * kWarps + warp
            if c >= geo.cin:
                continue
            m0 = (w // ctiles) * kTilePx + LANE
            ok, ah, rh, aw, rw, boff, acc = [], [], [], [], [], [], []
            pw = PixelWalk(m0, geo.in_h, geo.in_w)
            for j in range(kPx):
                if j > 0:
                    pw.step(geo.in_h, geo.in_w)
                ok.append(m0 + 32 * j < in_pixels)
                ah.append((pw.y + geo.pad_h) // geo.stride_h)
                rh.append(pw.y + geo.pad_h - ah[j] * geo.stride_h)
                aw.append((pw.x + geo.pad_w) // geo.stride_w)
                rw.append(pw.x + geo.pad_w - aw[j] * geo.stride_w)
                boff.append(pw.b * go.s[0])
                acc.append(np.zeros(32))
            e_begin, e_end = t["col_ptr"][c], t["col_ptr"][c + 1]
            for e0 in range(e_begin, e_end, 32):
                el = e0 + LANE
                have = el < e_end
                my_k = t["kernel_idx"].gather(el, have)
                my_o = t["kernel_row"].gather(el, have)
                my_vb = t["value_ptr"].gather(my_k, have)
                my_ve = t["value_ptr"].gather(my_k + 1, have)
                for q in range(min(e_end - e0, 32)):
                    o, vb, ve = shfl(my_o, q), shfl(my_vb, q), shfl(my_ve, q)
                    gbase = o * go.s[1]
                    for v in range(vb, ve):
                        wv = values[v]
                        tap = t["value_tap"][v]
                        qh, r_h, qw, r_w = table[tap] if tap < kTapTable else tap_phase(geo, tap)
                        for j in range(kPx):
                            oh, ow = ah[j] - qh, aw[j] - qw
                            hit = ok[j] & (rh[j] == r_h) & (rw[j] == r_w) & (oh >= 0) & \
                                (oh < geo.out_h) & (ow >= 0) & (ow < geo.out_w)
                            acc[j] += wv * go.load(gbase + boff[j] + oh * go.s[2] + ow * go.s[3], hit)
            ps = PixelWalk(m0, geo.in_h, geo.in_w)
            for j in range(kPx):
                if j > 0:
                    ps.step(geo.in_h, geo.in_w)
                out.store((ps.b * geo.cin + c) * in_plane + ps.y * geo.in_w + ps.x, acc[j],
                          m0 + 32 * j < in_pixels)
    return out


# ---- grad_weight_kernel + reduce_splits_kernel ------------------------------
def split_count(nnz, pixels, sms):
    want = 4 * sms
    splits = 1 if nnz >= want else cdiv(want, nnz)
    splits = min(splits, cdiv(pixels, kMinPxPerThread * kThreads), 64)
    return max(splits, 1)


def shfl_down_sum(v):
    """The per-warp tree: v[lane] += shfl_down(v, d) for d = 16 .. 1 (a lane
    past the warp gets its own value back). v: [warps, 32]."""
    for d in (16, 8, 4, 2, 1):
        src = LANE + d
        other = np.where(src < 32, v[:, np.minimum(src, 31)], v)
        v = v + other
    return v[:, 0]


def grad_weight(geo, t, x: Mem, go: Mem, sms=132, acc64=False):
    nnz, total = len(t["chan_idx"].a), len(t["value_tap"].a)
    out = Out(total)
    if total == 0 or nnz == 0:
        return out
    plane = geo.out_h * geo.out_w
    pixels = geo.batch * plane
    if pixels == 0:  # cudaMemsetAsync
        out.store(np.arange(total), np.zeros(total), np.ones(total, bool))
        return out
    splits = split_count(nnz, pixels, sms)
    split_px = cdiv(pixels, splits)
    dst = Out(splits * total) if splits > 1 else out
    sweep_max = 8 if acc64 else kVals
    dq, dr = kThreads // geo.out_w, kThreads % geo.out_w
    for w in range(splits * nnz):
        k, split = w % nnz, w // nnz
        lo, hi = 0, geo.cout - 1
        while lo < hi:
            mid = lo + (hi - lo) // 2
            if t["row_ptr"][mid + 1] <= k:
                lo = mid + 1
            else:
                hi = mid
        o = lo
        c = (o // geo.cout_g) * geo.cin_g + t["chan_idx"][k]
        xk, gok = c * x.s[1], o * go.s[1]
        p_begin = split * split_px
        p_end = min(p_begin + split_px, pixels)
        ve = t["value_ptr"][k + 1]
        for v0 in range(t["value_ptr"][k], ve, sweep_max):
            nv = min(sweep_max, ve - v0)
            shift = [tap_shift(geo, t["value_tap"][v0 + i]) for i in range(nv)]
            toff = [dy * x.s[2] + dx * x.s[3] for dy, dx in shift]
            V = 4 if nv <= 4 else sweep_max
            acc = np.zeros((kThreads, V))
            p = p_begin + TID
            b = p // plane
            rem = p - b * plane
            oh = rem // geo.out_w
            ow = rem - oh * geo.out_w
            while (p < p_end).any():
                m = p < p_end
                dyv = go.load(gok + b * go.s[0] + oh * go.s[2] + ow * go.s[3], m)
                ih0 = oh * geo.stride_h - geo.pad_h
                iw0 = ow * geo.stride_w - geo.pad_w
                xoff = b * x.s[0] + ih0 * x.s[2] + iw0 * x.s[3]
                for i in range(nv):
                    mi = m & inside(ih0 + shift[i][0], iw0 + shift[i][1], geo)
                    acc[:, i] += np.where(m, dyv * x.load(xk + xoff + toff[i], mi), 0.0)
                ow = ow + dr
                oh = oh + dq
                wrap = ow >= geo.out_w
                ow = np.where(wrap, ow - geo.out_w, ow)
                oh = np.where(wrap, oh + 1, oh)
                wraps = np.where(oh >= geo.out_h, oh // geo.out_h, 0)
                b = b + wraps
                oh = oh - wraps * geo.out_h
                p = p + kThreads
            red = np.stack([shfl_down_sum(acc[:, i].reshape(kWarps, 32)) for i in range(nv)], 1)
            for tid in range(nv):
                s = red[0, tid]
                for wp in range(1, kWarps):
                    s += red[wp, tid]
                dst.store(np.array([split * total + v0 + tid]), np.array([s]), np.array([True]))
    if splits > 1:
        assert (dst.writes == 1).all(), "a split partial was not written exactly once"
        part = dst.v.reshape(splits, total)
        v = part[0].copy()
        for sp in range(1, splits):
            v += part[sp]
        out.store(np.arange(total), v, np.ones(total, bool))
    return out


# ---- driver -----------------------------------------------------------------
def make_pattern(geo, build, seed):
    """A Pattern of the geometry: ('dense', sparsity) via from_dense (random
    library), ('mask', density) via from_mask (mixed pattern sizes, some
    kernels dropped), ('pruned',) with no kernel."""
    import torch

    from sparsekernels.formats.pattern import Pattern
    gen = torch.Generator().manual_seed(seed)
    shape = (geo.cout, geo.cin_g, geo.kh, geo.kw)
    w = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    if build[0] == "dense":
        return Pattern.from_dense(w, build[1], criterion="random", groups=geo.groups, seed=seed)
    if build[0] == "mask":
        mask = torch.rand(shape, generator=gen) < build[1]
        mask &= torch.rand(shape[:2], generator=gen)[..., None, None] < 0.8  # drop kernels
        return Pattern.from_mask(w, mask, groups=geo.groups)
    return Pattern.pruned(shape, geo.groups, dtype=torch.float64)


def check_case(geo, build, order, with_bias=True, seed=0, sms=132):
    """Max abs error per pass (grad-weight in both sweep widths)."""
    import torch
    import torch.nn.functional as F
    fmt = make_pattern(geo, build, seed)
    topo = fmt.topology()
    t = {f: Reads(getattr(topo, f).numpy().astype(np.int64)) for f in topo.TENSORS}
    values = Reads(fmt.values.numpy())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((geo.batch, geo.cin, geo.in_h, geo.in_w))
    bias = rng.standard_normal(geo.cout) if with_bias else None
    xt = torch.tensor(x, requires_grad=True)
    wt = fmt.to_dense().detach().requires_grad_()
    y = F.conv2d(xt, wt, None if bias is None else torch.tensor(bias),
                 (geo.stride_h, geo.stride_w), (geo.pad_h, geo.pad_w),
                 (geo.dil_h, geo.dil_w), geo.groups)
    assert y.shape[2:] == (geo.out_h, geo.out_w)
    gy = rng.standard_normal(tuple(y.shape))
    y.backward(torch.tensor(gy))
    errs = {}

    fo = forward(geo, t, values, Mem(x, order), bias)
    assert (fo.writes == 1).all(), "forward: element not written exactly once"
    # Each kept weight is read once per pixel tile (no value skipped or
    # doubled; the format holds no pruned weight to read).
    ptiles = cdiv(geo.batch * geo.out_h * geo.out_w, kTilePx)
    assert (values.count == ptiles).all(), "forward: a value not read once per tile"
    values.count[:] = 0
    errs["forward"] = np.abs(fo.v - y.detach().numpy().reshape(-1)).max(initial=0)

    gi = grad_input(geo, t, values, Mem(gy, order))
    assert (gi.writes == 1).all(), "grad_input: element not written exactly once"
    ptiles = cdiv(geo.batch * geo.in_h * geo.in_w, kTilePx)
    assert (values.count == ptiles).all(), "grad_input: a value not read once per tile"
    errs["grad_input"] = np.abs(gi.v - xt.grad.numpy().reshape(-1)).max(initial=0)

    ref = fmt.gather(wt.grad).numpy()
    for acc64 in (False, True):
        gw = grad_weight(geo, t, Mem(x, order), Mem(gy, order), sms=sms, acc64=acc64)
        assert (gw.writes == 1).all(), "grad_weight: element not written exactly once"
        errs["grad_weight" + ("_acc64" if acc64 else "")] = np.abs(gw.v - ref).max(initial=0)
    return errs


CASES = [
    # (N, Cin, H, W, Cout, kh, kw, stride, pad, dil, groups), weight, layout
    ((2, 5, 7, 6, 9, 3, 3, (1, 1), (1, 1), (1, 1), 1), ("dense", 0.6), "nchw"),
    ((2, 6, 9, 8, 4, 3, 2, (2, 3), (1, 0), (2, 1), 2), ("mask", 0.5), "padded"),  # stride, dil, groups
    ((3, 4, 6, 5, 4, 3, 3, (1, 1), (2, 2), (1, 1), 4), ("dense", 0.5), "nhwc"),   # depthwise
    ((1, 37, 5, 7, 12, 5, 3, (1, 2), (2, 1), (1, 1), 1), ("mask", 0.3), "nhwc"),  # mixed sizes
    ((1, 33, 3, 4, 34, 1, 1, (1, 1), (0, 0), (1, 1), 1), ("dense", 0.0), "nchw"),  # > 32 per row/col
    ((2, 3, 4, 4, 5, 1, 1, (1, 1), (0, 0), (1, 1), 1), ("dense", 0.0), "nhwc"),   # 1x1, all kept
    ((1, 3, 5, 5, 6, 5, 5, (2, 2), (0, 0), (1, 1), 1), ("pruned",), "nchw"),      # nnz == 0
    ((2, 4, 6, 6, 6, 3, 3, (1, 1), (1, 1), (1, 1), 2), ("dense", 1.0), "padded"), # sparsity 1
    ((0, 3, 5, 5, 6, 3, 3, (1, 1), (1, 1), (1, 1), 1), ("dense", 0.5), "nchw"),   # batch 0
    ((2, 8, 3, 3, 13, 2, 2, (3, 3), (0, 0), (1, 1), 1), ("mask", 0.6), "padded"), # out 1x1, stride > k
    ((1, 2, 3, 8, 3, 1, 260, (1, 1), (0, 130), (1, 1), 1), ("mask", 0.08), "nchw"),  # > kTapTable taps
    ((2, 2, 72, 72, 2, 3, 3, (1, 1), (1, 1), (1, 1), 1), ("dense", 0.5), "nhwc"), # split-K (3 splits)
    ((1, 3, 11, 1, 4, 3, 1, (2, 1), (1, 0), (1, 1), 1), ("mask", 0.7), "nchw"),   # out_w = 1 carries
]


def main() -> int:
    worst = 0.0
    for shape, build, order in CASES:
        errs = check_case(Geo(*shape), build, order)
        worst = max(worst, *errs.values())
        print(shape, build, order, {k: f"{v:.1e}" for k, v in errs.items()})
    print("worst", worst)
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
