"""Thread-exact emulation of the ldmatrix design's forward gather
(benchmarks/gpu_kernels.md, "The ldmatrix design"; its loop is
benchmarks/gpu_loop_probe.cu forward_ldsm_loop): before the kernel exists,
it proves that the shared-memory layout (each kept channel's halo in Kw
shifted copies, rows padded to runs of 8 pixels) and the per-lane
addresses (a step's K row + the tile's pixel run) make every warp's
``ldmatrix.x4.trans`` return exactly the wgmma m64nNk16 A fragment of the
implicit GEMM A[pixel, (channel, kh, kw)] = x[channel, y + kh - pad, x + kw - pad].

    python scripts/emulate_ldsm_forward.py          # a few random cases; exit 1 on a mismatch

Semantics emulated (PTX ISA): ldmatrix .x4 takes, from lane 8i + r, the
address of row r of matrix i (16 contiguous bytes, 16-byte aligned); with
.trans, lane T receives in register i the elements (row 2(T % 4), column
T / 4) and (row 2(T % 4) + 1, column T / 4) of matrix i, low half first.
The wgmma A fragment (K-major, in registers): lane (g, t) = (T / 4, T % 4)
of warp w holds in registers 0..3 rows 16w + g, 16w + g + 8, 16w + g,
16w + g + 8 and columns (2t, 2t + 1), (2t, 2t + 1), (2t + 8, 2t + 9),
(2t + 8, 2t + 9).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

KH = KW = 3
PAD = 1


@dataclass(frozen=True)
class Layout:
    """A stage's shared memory for a group of ``rows`` output rows starting
    at row ``g0`` of the batch's images stacked (row G is row G % height of
    image G // height). Slot s (a kept channel), copy kw, halo row hy at
    byte s * plane * KW + kw * plane + hy * pitch. Halo rows: the input row
    above the group, then the group's rows with one row between images
    (the zero padding below one image and above the next: one TMA box per
    image segment, rows -1 .. its last), then the input row below; element
    (hy, j) of copy kw is input column j + kw - PAD of that row, zero
    outside the image."""
    width: int   # image width W
    height: int  # image height H
    g0: int      # first output row of the group in the stacked batch
    rows: int    # output rows of the group
    slots: int   # kept channels of the stage

    def segment(self, g: int) -> int:
        """Image boundaries between the group's first row and row g."""
        return g // self.height - self.g0 // self.height

    @property
    def halo_rows(self) -> int:
        return self.rows + self.segment(self.g0 + self.rows - 1) + KH - 1

    @property
    def wp(self) -> int:  # a row's pixels, padded to runs of 8
        return -(-self.width // 8) * 8

    @property
    def pitch(self) -> int:
        return self.wp * 2

    @property
    def plane(self) -> int:  # 16 bytes past its rows: ldmatrix's 8 rows in 8 bank groups
        return self.halo_rows * self.pitch + 16

    @property
    def stage_bytes(self) -> int:
        """The planes, then slack that the last tile's tail runs (pixels
        past the group, computed and never stored) read instead of the
        next stage's bytes: up to one tile of rows past the last plane."""
        return self.slots * KW * self.plane + (-(-64 // self.wp) + 1) * self.pitch


def fill(x: np.ndarray, chans, lay: Layout) -> np.ndarray:
    """The bytes the copy engine would write (x: [images, C, H, W] uint16)."""
    h, w = x.shape[2:]
    smem = np.zeros(lay.stage_bytes, np.uint8)
    for g in range(lay.g0, lay.g0 + lay.rows):
        img, y = divmod(g, h)
        hy0 = g - lay.g0 + lay.segment(g)  # the halo row of input row y - 1
        for s, c in enumerate(chans):
            for kw in range(KW):
                for dy in range(KH):  # rows y - 1, y, y + 1 (rewritten identically by neighbours)
                    iy = y + dy - PAD
                    row = np.zeros(lay.wp, np.uint16)
                    for j in range(min(lay.wp, w)):
                        ix = j + kw - PAD
                        if 0 <= iy < h and 0 <= ix < w:
                            row[j] = x[img, c, iy, ix]
                    off = s * KW * lay.plane + kw * lay.plane + (hy0 + dy) * lay.pitch
                    smem[off:off + lay.pitch] = row.view(np.uint8)
    return smem


def k_row_offset(k: int, lay: Layout) -> int:
    """Byte offset of K row k = (slot, kh, kw) at pixel (row 0, column 0)."""
    s, t = divmod(k, KH * KW)
    kh, kw = divmod(t, KW)
    return s * KW * lay.plane + kw * lay.plane + kh * lay.pitch


def run_offset(m: int, lay: Layout) -> int:
    """Byte offset of the run of 8 pixels that starts at group pixel m (a
    multiple of 8): runs go along the padded rows; a row's halo row y - 1
    is its index in the group plus the image boundaries crossed."""
    run = m // 8
    per_row = lay.wp // 8
    r = run // per_row
    return (r + lay.segment(lay.g0 + r)) * lay.pitch + (run % per_row) * 16


def ldmatrix_x4_trans(smem: np.ndarray, addr: list[int]) -> np.ndarray:
    """regs[T, i] (uint32) of a warp's ldmatrix.sync.aligned.m8n8.x4.trans.b16."""
    assert all(a % 16 == 0 and 0 <= a <= len(smem) - 16 for a in addr), "ldmatrix rows: aligned, in the stage"
    mats = np.stack([np.stack([smem[addr[8 * i + r]:addr[8 * i + r] + 16].view(np.uint16) for r in range(8)])
                     for i in range(4)])  # [matrix, row, column]
    regs = np.zeros((32, 4), np.uint32)
    for t in range(32):
        for i in range(4):
            lo = mats[i, 2 * (t % 4), t // 4]
            hi = mats[i, 2 * (t % 4) + 1, t // 4]
            regs[t, i] = int(lo) | int(hi) << 16
    return regs


def lane_addresses(step: int, warp: int, m0: int, lay: Layout) -> list[int]:
    """What each lane gives ldmatrix for K step ``step`` and the warp's 16
    rows of the tile starting at group pixel m0: lane l = 8i + r gives row r
    of matrix i, i.e. K row 16 step + r + 8 (i // 2) at pixel run (i % 2)."""
    return [k_row_offset(16 * step + l % 8 + 8 * (l // 16), lay) + run_offset(m0 + 16 * warp + 8 * ((l // 8) % 2), lay)
            for l in range(32)]


def a_from_fragments(regs_per_warp: list[np.ndarray]) -> np.ndarray:
    """The [64, 16] A tile that the four warps' fragments hold, read back
    through the wgmma A layout."""
    a = np.full((64, 16), -1, np.int64)
    for w, regs in enumerate(regs_per_warp):
        for t in range(32):
            g, q = divmod(t, 4)
            for i, (dm, dk) in enumerate(((0, 0), (8, 0), (0, 8), (8, 8))):
                v = int(regs[t, i])
                for half in range(2):
                    a[16 * w + g + dm, 2 * q + dk + half] = (v >> (16 * half)) & 0xFFFF
    return a


def reference(x: np.ndarray, chans, m0: int, step: int, lay: Layout) -> np.ndarray:
    h, w = x.shape[2:]
    a = np.zeros((64, 16), np.int64)
    for m in range(64):
        run = (m0 + m) // 8
        img, oy = divmod(lay.g0 + run // (lay.wp // 8), h)
        ox = (run % (lay.wp // 8)) * 8 + (m0 + m) % 8
        for k in range(16):
            s, t = divmod(16 * step + k, KH * KW)
            kh, kw = divmod(t, KW)
            iy, ix = oy + kh - PAD, ox + kw - PAD
            inside = img < len(x) and ox < w and 0 <= iy < h and 0 <= ix < w
            a[m, k] = x[img, chans[s], iy, ix] if inside else 0
    return a


def check(seed: int, width: int, height: int, g0: int, rows: int, images: int = 4) -> None:
    """Every m64 tile and k16 step of a 16-channel stage of one group."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, 65535, size=(images, 20, height, width), dtype=np.uint16)  # never 0: padding shows
    chans = sorted(rng.choice(20, size=16, replace=False))
    lay = Layout(width=width, height=height, g0=g0, rows=rows, slots=16)
    smem = fill(x, chans, lay)
    tiles = -(-rows * lay.wp // 64)
    for tile in range(tiles):
        for step in range(16 * 9 // 16):
            regs = [ldmatrix_x4_trans(smem, lane_addresses(step, w, 64 * tile, lay)) for w in range(4)]
            got = a_from_fragments(regs)
            want = reference(x, chans, 64 * tile, step, lay)
            # pixels past the group's rows (the last tile's tail) are not stored: ignore them
            real = np.array([(64 * tile + m) // lay.wp < rows for m in range(64)])
            if not np.array_equal(got[real], want[real]):
                bad = np.argwhere((got != want) & real[:, None])[0]
                raise AssertionError(f"W={width} g0={g0} rows={rows} tile {tile} step {step}: A{tuple(bad)} = "
                                     f"{got[tuple(bad)]}, want {want[tuple(bad)]}")


CASES = [  # (width, height, first row, rows): whole images, groups across images, one image's middle
    (7, 7, 0, 7), (7, 7, 3, 20), (14, 14, 10, 9), (28, 28, 24, 16), (12, 5, 2, 11), (9, 8, 5, 3), (16, 4, 1, 6)]


def main() -> int:
    for seed, case in enumerate(CASES):
        check(seed, *case)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
