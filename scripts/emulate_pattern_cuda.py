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
threads are numpy vectors. Memory, outputs, the split-K count and reduction
and the reference come from scripts/cuda_emulation.py: a wrong offset reads
a wrong value, a 1e30 filler in the 'padded' layout, or raises, and an
unwritten or doubly written output element is caught.

Compared against float64 torch.nn.functional.conv2d (and its autograd) on
the decoded dense weight (Pattern.to_dense()). Run directly for the sweep,
or via tests/test_pattern_cuda_emulation.py.
"""
from __future__ import annotations

import sys

import numpy as np
from cuda_emulation import (TOLERANCE, Geo, Mem, Out, Reference, cdiv, inside, max_error,
                            reduce_splits, split_count)

# Constants of pattern_kernels.cuh / pattern_grad_weight.cu.
kThreads, kWarps, kPx = 256, 8, 4
kTilePx = 32 * kPx
kTapTable = 256
kNoRow = -(1 << 30) - 1
kVals, kMinPxPerThread = 16, 16
LANE = np.arange(32)
TID = np.arange(kThreads)


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


def tap_table(geo, entry_of):
    """fill_tap_table: entry_of(geo, t) for the taps the table holds."""
    return [entry_of(geo, t) for t in range(min(geo.taps, kTapTable))]


def tap_lookup(geo, table, t, entry_of):
    return table[t] if t < kTapTable else entry_of(geo, t)


class ChannelPixelTiles:
    """pattern_kernels.cuh ChannelPixelTiles: (kWarps channels, kTilePx
    pixels) work items, channel tiles fastest."""

    def __init__(self, channels, pixels):
        self.ctiles = cdiv(channels, kWarps)
        self.work = self.ctiles * cdiv(pixels, kTilePx)

    def channel(self, item, warp):
        return (item % self.ctiles) * kWarps + warp

    def first_pixel(self, item):  # per lane
        return (item // self.ctiles) * kTilePx + LANE


def shfl(vec, lane):
    return vec[lane].item()


def for_each_kernel(begin, end, load):
    """pattern_kernels.cuh for_each_kernel: the lanes load 32 entries'
    (a, vb, ve) per chunk (load(e, have) -> three lane vectors), then each
    entry's, broadcast from its lane, in order."""
    for e0 in range(begin, end, 32):
        e = e0 + LANE
        mine = load(e, e < end)
        for q in range(min(end - e0, 32)):
            yield tuple(shfl(v, q) for v in mine)


class PixelWalk:
    """pattern_kernels.cuh PixelWalk, vectorised over the lanes (step_px
    32) or the threads (kThreads)."""

    def __init__(self, m, rows, cols, step_px):
        plane = rows * cols
        self.b = m // plane
        rem = m - self.b * plane
        self.y = rem // cols
        self.x = rem - self.y * cols
        self.dq = step_px // cols
        self.dr = step_px - self.dq * cols

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


# ---- forward_kernel ---------------------------------------------------------
def forward(geo, t, values: Reads, x: Mem, bias):
    plane = geo.out_h * geo.out_w
    pixels = geo.batch * plane
    out = Out(geo.batch * geo.cout * plane)
    tiles = ChannelPixelTiles(geo.cout, pixels)
    if tiles.work == 0:
        return out
    table = tap_table(geo, tap_shift)

    def load_kernel(k, have):
        return (t["chan_idx"].gather(k, have), t["value_ptr"].gather(k, have),
                t["value_ptr"].gather(k + 1, have))

    for w in range(tiles.work):
        for warp in range(kWarps):
            o = tiles.channel(w, warp)
            if o >= geo.cout:
                continue
            m0 = tiles.first_pixel(w)
            ih0, iw0, off, acc = [], [], [], []
            pw = PixelWalk(m0, geo.out_h, geo.out_w, 32)
            for j in range(kPx):
                if j > 0:
                    pw.step(geo.out_h, geo.out_w)
                ih0.append(np.where(m0 + 32 * j < pixels, pw.y * geo.stride_h - geo.pad_h, kNoRow))
                iw0.append(pw.x * geo.stride_w - geo.pad_w)
                off.append(pw.b * x.s[0] + ih0[j] * x.s[2] + iw0[j] * x.s[3])
                acc.append(np.zeros(32))
            xg = (o // geo.cout_g) * geo.cin_g * x.s[1]
            for c, vb, ve in for_each_kernel(t["row_ptr"][o], t["row_ptr"][o + 1], load_kernel):
                xc = xg + c * x.s[1]
                for v in range(vb, ve):
                    wv = values[v]
                    dy, dx = tap_lookup(geo, table, t["value_tap"][v], tap_shift)
                    toff = dy * x.s[2] + dx * x.s[3]
                    for j in range(kPx):
                        m = inside(ih0[j] + dy, iw0[j] + dx, geo)
                        acc[j] += wv * x.load(xc + off[j] + toff, m)
            bv = bias[o] if bias is not None else 0.0
            ps = PixelWalk(m0, geo.out_h, geo.out_w, 32)
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
    tiles = ChannelPixelTiles(geo.cin, in_pixels)
    if tiles.work == 0:
        return out
    table = tap_table(geo, tap_phase)

    def load_kernel(e, have):
        k = t["kernel_idx"].gather(e, have)
        return (t["kernel_row"].gather(e, have), t["value_ptr"].gather(k, have),
                t["value_ptr"].gather(k + 1, have))

    for w in range(tiles.work):
        for warp in range(kWarps):
            c = tiles.channel(w, warp)
            if c >= geo.cin:
                continue
            m0 = tiles.first_pixel(w)
            ok, ah, rh, aw, rw, boff, acc = [], [], [], [], [], [], []
            pw = PixelWalk(m0, geo.in_h, geo.in_w, 32)
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
            for o, vb, ve in for_each_kernel(t["col_ptr"][c], t["col_ptr"][c + 1], load_kernel):
                gbase = o * go.s[1]
                for v in range(vb, ve):
                    wv = values[v]
                    qh, r_h, qw, r_w = tap_lookup(geo, table, t["value_tap"][v], tap_phase)
                    for j in range(kPx):
                        oh, ow = ah[j] - qh, aw[j] - qw
                        hit = ok[j] & (rh[j] == r_h) & (rw[j] == r_w) & (oh >= 0) & \
                            (oh < geo.out_h) & (ow >= 0) & (ow < geo.out_w)
                        acc[j] += wv * go.load(gbase + boff[j] + oh * go.s[2] + ow * go.s[3], hit)
            ps = PixelWalk(m0, geo.in_h, geo.in_w, 32)
            for j in range(kPx):
                if j > 0:
                    ps.step(geo.in_h, geo.in_w)
                out.store((ps.b * geo.cin + c) * in_plane + ps.y * geo.in_w + ps.x, acc[j],
                          m0 + 32 * j < in_pixels)
    return out


# ---- grad_weight_kernel + reduce_splits_kernel ------------------------------
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
    pixels = geo.batch * geo.out_h * geo.out_w
    if pixels == 0:  # cudaMemsetAsync
        out.store(np.arange(total), np.zeros(total), np.ones(total, bool))
        return out
    splits = split_count(nnz, cdiv(pixels, kMinPxPerThread * kThreads), sms)
    split_px = cdiv(pixels, splits)
    dst = Out(splits * total) if splits > 1 else out
    sweep_max = 8 if acc64 else kVals
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
            px = PixelWalk(p, geo.out_h, geo.out_w, kThreads)
            while (p < p_end).any():
                m = p < p_end
                dyv = go.load(gok + px.b * go.s[0] + px.y * go.s[2] + px.x * go.s[3], m)
                ih0 = px.y * geo.stride_h - geo.pad_h
                iw0 = px.x * geo.stride_w - geo.pad_w
                xoff = px.b * x.s[0] + ih0 * x.s[2] + iw0 * x.s[3]
                for i in range(nv):
                    mi = m & inside(ih0 + shift[i][0], iw0 + shift[i][1], geo)
                    acc[:, i] += np.where(m, dyv * x.load(xk + xoff + toff[i], mi), 0.0)
                px.step(geo.out_h, geo.out_w)
                p = p + kThreads
            red = np.stack([shfl_down_sum(acc[:, i].reshape(kWarps, 32)) for i in range(nv)], 1)
            for tid in range(nv):
                s = red[0, tid]
                for wp in range(1, kWarps):
                    s += red[wp, tid]
                dst.store(np.array([split * total + v0 + tid]), np.array([s]), np.array([True]))
    if splits > 1:
        reduce_splits(dst, splits, total, out)
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
    fmt = make_pattern(geo, build, seed)
    topo = fmt.topology()
    t = {f: Reads(getattr(topo, f).numpy().astype(np.int64)) for f in topo.TENSORS}
    values = Reads(fmt.values.numpy())
    ref = Reference(geo, fmt.to_dense(), np.random.default_rng(seed), with_bias)
    errs = {}

    fo = forward(geo, t, values, Mem(ref.x, order), ref.bias)
    fo.assert_written_once("forward")
    # Each kept weight is read once per pixel tile (no value skipped or
    # doubled; the format holds no pruned weight to read).
    ptiles = cdiv(geo.batch * geo.out_h * geo.out_w, kTilePx)
    assert (values.count == ptiles).all(), "forward: a value not read once per tile"
    values.count[:] = 0
    errs["forward"] = max_error(fo.v, ref.y)

    gi = grad_input(geo, t, values, Mem(ref.gy, order))
    gi.assert_written_once("grad_input")
    ptiles = cdiv(geo.batch * geo.in_h * geo.in_w, kTilePx)
    assert (values.count == ptiles).all(), "grad_input: a value not read once per tile"
    errs["grad_input"] = max_error(gi.v, ref.grad_x)

    grad_values = fmt.gather(ref.grad_weight).numpy()
    for acc64 in (False, True):
        gw = grad_weight(geo, t, Mem(ref.x, order), Mem(ref.gy, order), sms=sms, acc64=acc64)
        gw.assert_written_once("grad_weight")
        errs["grad_weight" + ("_acc64" if acc64 else "")] = max_error(gw.v, grad_values)
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
    return 0 if worst < TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
