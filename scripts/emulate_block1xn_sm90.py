"""Thread-exact CPU emulation of the Hopper 1xN forward
(csrc/cuda/block1xn/block1xn_forward_sm90.cu), checked by
tests/test_block1xn_sm90_emulation.py.

It replays the kernel's plan (make_plan), its work items, the stage ring
(issue / compute order and buffer indices), warp 0's slot decode (shfl_up +
ballot prefix count), every cp.async piece (source offset, 16/8/4-byte
alignment, all-in or all-out of the image, zero fill, destination inside its
slot), the A registers each of the 256 threads gathers from shared memory, the
wgmma (the 64x16 A rebuilt from the 128 threads' registers with the PTX ISA
fragment table, B read through the swizzled layout the descriptor names) and
the epilogue's stores. Shared memory starts as NaN, so a read of anything no
copy wrote poisons the output; outputs start as NaN and count their writes.
Arithmetic is float64: only the index math is under test.
"""
from __future__ import annotations

import numpy as np

from cuda_emulation import Geo, Mem, Out, Reference, cdiv, max_error

# block1xn_forward_sm90.cuh
kBM, kThreads, kStages, kMaxKc, kChunk, kSmemAlign = 128, 256, 3, 16, 8, 1024
kBatch = 4
# H100/H200: cudaDevAttrMaxSharedMemoryPerBlockOptin minus the static tables.
STATIC_SMEM = kStages * kMaxKc * 8 + kStages * (kMaxKc + 1) * 4 + kStages * 4
SMEM_LIMIT = 232448 - STATIC_SMEM


def b_swizzle_bits(bn):
    """log2 of the swizzle's 16-byte rows: SW32/64/128 for BN 16/32/64."""
    return {16: 1, 32: 2, 64: 3}[bn]


def b_layout(bn, n, k):
    """Element offset of (lane n, pair k) in one k16 B tile: CuTe's
    tile_to_shape(GMMA::Layout_MN_SW{32,64,128}_Atom<16-bit>, (BN, 16)); the
    CuTe layout test (tests/test_cute_layouts.py) checks this against CuTe."""
    x = n + bn * (k % 8) + bn * 8 * (k // 8)
    bits = b_swizzle_bits(bn)
    return x ^ ((x >> 3) & (((1 << bits) - 1) << 3))


def ptx_a_layout(lane, warp, v):
    """PTX ISA wgmma m64nNk16 A fragment (16-bit): value v of lane in warp w
    of the warpgroup -> (row, col) of the 64 x 16 A."""
    g, t = lane // 4, lane % 4
    return 16 * warp + g + 8 * ((v >> 1) & 1), 2 * t + (v & 1) + 8 * (v >> 2)


def ptx_c_layout(lane, warp, v):
    """PTX ISA wgmma D fragment (fp32): value v -> (row, col) of 64 x N."""
    g, t = lane // 4, lane % 4
    return 16 * warp + g + 8 * ((v >> 1) & 1), 8 * (v >> 2) + 2 * t + (v & 1)


def thread_a_regs(t):
    """What k_batch loads into A registers 0..3 of lane (g, t): (which of
    the lane's two pixels, pair column of the low half, of the high half)."""
    return [(0, 2 * t, 2 * t + 1), (1, 2 * t, 2 * t + 1),
            (0, 2 * t + 8, 2 * t + 9), (1, 2 * t + 8, 2 * t + 9)]


def shfl_up(v):
    """__shfl_up_sync(v, 1) over a warp: lane 0 keeps its own value."""
    return np.concatenate([v[:1], v[:-1]])


def tap_offset(tap, geo, p):
    """A tap's offset inside a slot (the kernel's tap_off table)."""
    return (tap // geo.kw) * geo.dil_h * p.row_pitch + (tap % geo.kw) * geo.dil_w * p.col_pitch


def store_lane(t, v):
    """store_tile: (pixel half h, lane l) of accumulator v."""
    return (v >> 1) & 1, 8 * (v >> 2) + 2 * t + (v & 1)


class Plan:
    """make_plan<BN>: None when the kernel declines the problem."""

    @staticmethod
    def make(geo, n, in_s, smem_limit=SMEM_LIMIT):
        bn = next((b for b in (64, 32, 16) if n % b == 0), None)
        if bn is None:
            return None
        p = Plan()
        p.bn, p.n = bn, n
        s_n, s_c, s_h, s_w = in_s
        p.nhwc, p.piece_elems = 0, 0
        if s_c == 1 and geo.cin % kChunk == 0 and s_w % 8 == 0 and s_h % 8 == 0 and s_n % 8 == 0:
            p.nhwc, p.piece_elems = 1, kChunk
        elif s_w == 1:
            for pw in (8, 4, 2):
                if geo.in_w % pw == 0 and s_h % pw == 0 and s_c % pw == 0 and s_n % pw == 0:
                    p.piece_elems = pw
                    break
            if p.piece_elems == 0:
                return None
        else:
            return None
        p.tw_log2 = 3 if geo.out_w <= 8 else 4
        tw, th = 1 << p.tw_log2, kBM >> p.tw_log2
        halo_h = (th - 1) * geo.stride_h + (geo.kh - 1) * geo.dil_h + 1
        halo_w = (tw - 1) * geo.stride_w + (geo.kw - 1) * geo.dil_w + 1
        if halo_h > 4096 or halo_w > 4096:
            return None
        p.halo_h = halo_h
        if p.nhwc:
            p.pieces, p.piece_step, p.col_pitch = halo_w, 1, kChunk
        else:
            p.pieces = cdiv(halo_w + p.piece_elems - 1, p.piece_elems)
            p.piece_step, p.col_pitch = p.piece_elems, 1
        p.row_pitch = p.pieces * p.piece_step * p.col_pitch
        p.slot_elems = cdiv(p.halo_h * p.row_pitch, 8) * 8
        taps = geo.taps
        kc = kMaxKc
        while kc >= 1:
            ksteps = cdiv(kc * taps, 16)
            b_stage = ksteps * bn * 16 * 2
            a_stage = cdiv((kc + 1) * p.slot_elems * 2, 16) * 16
            kp_bytes = ksteps * 16 * 4
            a_base = kStages * b_stage
            pair_off_base = a_base + kStages * a_stage
            total = pair_off_base + kStages * kp_bytes + 2 * kp_bytes + kSmemAlign
            if total <= smem_limit:
                p.kc, p.ksteps = kc, ksteps
                p.b_stage_bytes, p.a_stage_bytes, p.a_base = b_stage, a_stage, a_base
                p.smem_bytes = total
                return p
            kc //= 2
        return None


def run_kernel(geo, p, row_ptr, col_idx, values, x: Mem, bias, out: Out, out_s):
    """forward_sm90_kernel over every work item (each CTA's grid-stride share
    in turn: the order of items does not change what they compute)."""
    taps, bn, n = geo.taps, p.bn, p.n
    rows_per_group = cdiv(geo.cout_g, n)
    rows = geo.groups * rows_per_group
    chunks = n // bn
    tw, th = 1 << p.tw_log2, kBM >> p.tw_log2
    tiles_w, tiles_h = cdiv(geo.out_w, tw), cdiv(geo.out_h, th)
    work = geo.batch * tiles_h * tiles_w * rows * chunks
    s_n, s_c, s_h, s_w = x.s
    kp = p.ksteps * 16

    # Shared memory, as 16-bit elements (B stages then A stages); NaN = never written.
    smem = np.full((p.a_base + kStages * p.a_stage_bytes) // 2, np.nan)
    a_el = lambda st: (p.a_base + st * p.a_stage_bytes) // 2  # noqa: E731
    b_el = lambda st: st * p.b_stage_bytes // 2  # noqa: E731
    slot_src = np.zeros((kStages, kMaxKc), np.int64)
    chan_off = np.zeros((kStages, kMaxKc + 1), np.int64)
    slot_count = np.zeros(kStages, np.int64)
    pair_off = np.zeros((kStages, kp), np.int64)

    # Per-launch tables and the zero slots.
    i = np.arange(kp)
    real = i < p.kc * taps
    tap = i % taps
    pair_j = np.where(real, i // taps, p.kc)
    tap_off = np.where(real, tap_offset(tap, geo, p), 0)
    for st in range(kStages):
        z = a_el(st) + p.kc * p.slot_elems
        smem[z:z + p.slot_elems] = 0.0
        chan_off[st, p.kc] = p.kc * p.slot_elems

    # The PTX fragment tables of one warpgroup: (thread, value) -> (row, col).
    ti, va = np.meshgrid(np.arange(128), np.arange(8), indexing="ij")
    ra, ca = ptx_a_layout(ti % 32, ti // 32, va)
    seen = np.zeros((64, 16), int)
    np.add.at(seen, (ra, ca), 1)
    assert (seen == 1).all(), "A fragment table does not cover the 64 x 16 tile once"
    ti, vc = np.meshgrid(np.arange(128), np.arange(bn // 2), indexing="ij")
    rc, cc = ptx_c_layout(ti % 32, ti // 32, vc)

    # Each 16-byte B piece (8 lanes at one pair) stays whole and aligned.
    nn, kk = np.meshgrid(np.arange(0, bn, 8), np.arange(16), indexing="ij")
    for d in range(8):
        assert (b_layout(bn, nn + d, kk) == b_layout(bn, nn, kk) + d).all()
    assert (b_layout(bn, nn, kk) % 8 == 0).all()

    tid = np.arange(kThreads)
    lane, warp, wg = tid % 32, (tid // 32) % 4, tid // 128
    g, t = lane // 4, lane % 4
    wg_row = wg * 64 + warp * 16 + g

    for w in range(work):
        it_n0 = (w % chunks) * bn
        row = (w // chunks) % rows
        tile = w // chunks // rows
        image = tile // (tiles_h * tiles_w)
        in_image = tile - image * tiles_h * tiles_w
        oh0, ow0 = (in_image // tiles_w) * th, (in_image % tiles_w) * tw
        ih_lo = oh0 * geo.stride_h - geo.pad_h
        iw_lo = ow0 * geo.stride_w - geo.pad_w
        floor_lo = iw_lo if p.nhwc else (iw_lo // p.piece_elems) * p.piece_elems
        x0, col_shift = floor_lo, iw_lo - floor_lo
        group = row // rows_per_group
        first = row_ptr[row]
        kept = row_ptr[row + 1] - first
        stages = cdiv(kept, p.kc)

        def pix_off(m):
            return ((m >> p.tw_log2) * geo.stride_h * p.row_pitch
                    + (m & (tw - 1)) * geo.stride_w * p.col_pitch + col_shift)

        pix = (pix_off(wg_row), pix_off(wg_row + 8))

        def decode(s, st):  # warp 0
            j = np.arange(32)
            jj = s * p.kc + j
            valid = (j < p.kc) & (jj < kept)
            c = np.where(valid, group * geo.cin_g
                         + col_idx[np.where(valid, first + jj, 0)], -1)
            key = np.where(c >= 0, c // kChunk, -1) if p.nhwc else c
            prev = shfl_up(key)
            fresh = valid & ((j == 0) | (key != prev))
            mask = sum(1 << int(b) for b in j[fresh])
            slot = np.array([bin(mask & ((2 << int(b)) - 1)).count("1") - 1 for b in j])
            for b in j[fresh]:
                ch = key[b] * kChunk if p.nhwc else c[b]
                slot_src[st, slot[b]] = image * s_n + ch * s_c
            lanes = j < p.kc
            chan_off[st, :p.kc] = np.where(
                valid, slot * p.slot_elems + (c % kChunk if p.nhwc else 0),
                p.kc * p.slot_elems)[lanes]
            slot_count[st] = bin(mask).count("1")

        def fill(s, st):  # all threads
            pair_off[st] = chan_off[st, pair_j] + tap_off
            per_slot = p.halo_h * p.pieces
            i = np.arange(slot_count[st] * per_slot)
            slot, r = np.divmod(i, per_slot)
            y, q = np.divmod(r, p.pieces)
            ih, iw = ih_lo + y, x0 + q * p.piece_step
            ok = (ih >= 0) & (ih < geo.in_h) & (iw >= 0) & (iw < geo.in_w)
            dst = slot * p.slot_elems + y * p.row_pitch + q * p.piece_step * p.col_pitch
            assert (slot < p.kc).all()
            assert (dst + p.piece_elems <= (slot + 1) * p.slot_elems).all()
            src = np.where(ok, slot_src[st, slot] + ih * s_h + iw * s_w, 0)
            assert (src % p.piece_elems == 0).all(), "cp.async source not aligned"
            if not p.nhwc:  # a piece is wholly inside the image row or zero-filled
                assert (iw[ok] + p.piece_elems <= geo.in_w).all()
            e = np.arange(p.piece_elems)
            okm = np.broadcast_to(ok[:, None], (i.size, p.piece_elems))
            smem[a_el(st) + dst[:, None] + e] = x.load(src[:, None] + e, okm)

            k0, k_end = s * p.kc * taps, kept * taps
            k, q = np.divmod(np.arange(kp * (bn // 8)), bn // 8)
            ok = k0 + k < k_end
            dst = b_el(st) + (k // 16) * (bn * 16) + b_layout(bn, 8 * q, k % 16)
            e = np.arange(8)
            src = np.where(ok, (first * taps + k0 + k) * n + it_n0 + 8 * q, 0)
            smem[dst[:, None] + e] = np.where(ok[:, None], values[src[:, None] + e], 0.0)

        def issue(s):
            st = s % kStages
            if s < stages:
                decode(s, st)
                fill(s, st)

        for s in range(kStages - 1):
            issue(s)
        acc = np.zeros((kThreads, bn // 2))
        for s in range(stages):
            issue(s + kStages - 1)
            st = s % kStages
            a_base = a_el(st)
            for ks in range(p.ksteps):
                regs = np.zeros((kThreads, 4, 2))  # lo/hi halves of the 4 registers
                for r, (h, c_lo, c_hi) in enumerate(thread_a_regs(t)):
                    po_lo = pair_off[st, ks * 16 + c_lo]
                    po_hi = pair_off[st, ks * 16 + c_hi]
                    # every offset stays inside the stage's A region
                    assert (pix[h] + po_lo).max() < (p.kc + 1) * p.slot_elems
                    assert (pix[h] + po_hi).max() < (p.kc + 1) * p.slot_elems
                    regs[:, r, 0] = smem[a_base + pix[h] + po_lo]
                    regs[:, r, 1] = smem[a_base + pix[h] + po_hi]
                btile = b_el(st) + ks * bn * 16
                kk, nn = np.meshgrid(np.arange(16), np.arange(bn), indexing="ij")
                B = smem[btile + b_layout(bn, nn, kk)]
                for q in range(2):  # the two warpgroups' wgmmas
                    A = np.full((64, 16), np.nan)
                    A[ra, ca] = regs[q * 128:(q + 1) * 128].reshape(128, 8)
                    acc[q * 128:(q + 1) * 128] += (A @ B)[rc, cc]

        # store_tile
        qrow = row % rows_per_group
        valid_lanes = min(n, geo.cout_g - qrow * n)
        o0 = group * geo.cout_g + qrow * n + it_n0
        v = np.arange(bn // 2)
        h, l = store_lane(t[:, None], v[None, :])
        m = wg_row[:, None] + 8 * h
        oh, ow = oh0 + (m >> p.tw_log2), ow0 + (m & (tw - 1))
        ok = (oh < geo.out_h) & (ow < geo.out_w) & (it_n0 + l < valid_lanes)
        r = acc + (bias[np.minimum(o0 + l, geo.cout - 1)] if bias is not None else 0.0)
        idx = image * out_s[0] + (o0 + l) * out_s[1] + oh * out_s[2] + ow * out_s[3]
        out.store(idx, r, ok)


def make_topology(geo, n, density, rng, empty_rows=()):
    """A random 1xN topology (sorted kept channels per row; rows in
    empty_rows fully pruned) and its dense weight."""
    rpg = cdiv(geo.cout_g, n)
    rows = geo.groups * rpg
    row_ptr, cols = [0], []
    for r in range(rows):
        keep = [] if r in empty_rows else sorted(
            np.flatnonzero(rng.random(geo.cin_g) < density).tolist())
        cols += keep
        row_ptr.append(len(cols))
    nnzb = len(cols)
    values = rng.standard_normal((nnzb, geo.kh, geo.kw, n))
    weight = np.zeros((geo.cout, geo.cin_g, geo.kh, geo.kw))
    for r in range(rows):
        grp, q = divmod(r, rpg)
        valid = min(n, geo.cout_g - q * n)
        for b in range(row_ptr[r], row_ptr[r + 1]):
            o = grp * geo.cout_g + q * n
            weight[o:o + valid, cols[b]] = values[b, :, :, :valid].transpose(2, 0, 1)
    return np.array(row_ptr), np.array(cols, dtype=np.int64), values.reshape(-1), weight


def out_strides(geo, order):
    c, h, w = geo.cout, geo.out_h, geo.out_w
    return (c * h * w, h * w, w, 1) if order == "nchw" else (h * w * c, 1, w * c, c)


def check_case(geo, n, density, in_order, out_order, rng_seed=0, empty_rows=(),
               smem_limit=SMEM_LIMIT, with_bias=True):
    """Max abs error against float64 F.conv2d (None when the kernel declines
    the case: the dispatcher then runs the mma.sync kernel)."""
    rng = np.random.default_rng(rng_seed)
    row_ptr, cols, values, weight = make_topology(geo, n, density, rng, empty_rows)
    ref = Reference(geo, weight, rng, with_bias=with_bias)
    x = Mem(ref.x, in_order)
    p = Plan.make(geo, n, x.s, smem_limit)
    if p is None:
        return None
    os_ = out_strides(geo, out_order)
    out = Out(geo.batch * geo.cout * geo.out_h * geo.out_w)
    run_kernel(geo, p, row_ptr, cols, values, x, ref.bias, out, os_)
    out.assert_written_once("output")
    want = ref.y.reshape(geo.batch, geo.cout, geo.out_h, geo.out_w)
    if out_order == "nhwc":
        want = want.transpose(0, 2, 3, 1)
    return max_error(out.v, want.reshape(-1))
