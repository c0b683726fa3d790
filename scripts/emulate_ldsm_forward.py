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
    """A stage's shared memory: slot s (a kept channel), copy kw, halo row
    hy at byte s * plane * KW + kw * plane + hy * pitch; element (hy, j) of
    copy kw is input (y0 - PAD + hy, j + kw - PAD), zero outside the image."""
    width: int   # image width W
    rows: int    # output rows of the group (one image here)
    slots: int   # kept channels of the stage

    @property
    def wp(self) -> int:  # a row's pixels, padded to runs of 8
        return -(-self.width // 8) * 8

    @property
    def pitch(self) -> int:
        return self.wp * 2

    @property
    def plane(self) -> int:  # 16 bytes past its rows: ldmatrix's 8 rows in 8 bank groups
        return (self.rows + KH - 1) * self.pitch + 16

    @property
    def stage_bytes(self) -> int:
        """The planes, then slack that the last tile's tail runs (pixels
        past the group, computed and never stored) read instead of the
        next stage's bytes: up to one tile of rows past the last plane."""
        return self.slots * KW * self.plane + (-(-64 // self.wp) + 1) * self.pitch


def fill(x: np.ndarray, chans, y0: int, lay: Layout) -> np.ndarray:
    """The bytes the copy engine would write (x: [C, H, W] uint16)."""
    h, w = x.shape[1:]
    smem = np.zeros(lay.stage_bytes, np.uint8)
    for s, c in enumerate(chans):
        for kw in range(KW):
            for hy in range(lay.rows + KH - 1):
                iy = y0 - PAD + hy
                row = np.zeros(lay.wp, np.uint16)
                for j in range(lay.wp):
                    ix = j + kw - PAD
                    if 0 <= iy < h and 0 <= ix < w and j < w:
                        row[j] = x[c, iy, ix]
                off = s * KW * lay.plane + kw * lay.plane + hy * lay.pitch
                smem[off:off + lay.pitch] = row.view(np.uint8)
    return smem


def k_row_offset(k: int, lay: Layout) -> int:
    """Byte offset of K row k = (slot, kh, kw) at pixel (row 0, column 0)."""
    s, t = divmod(k, KH * KW)
    kh, kw = divmod(t, KW)
    return s * KW * lay.plane + kw * lay.plane + kh * lay.pitch


def run_offset(m: int, lay: Layout) -> int:
    """Byte offset of the run of 8 pixels that starts at tile pixel m (a
    multiple of 8): runs go along the padded rows."""
    run = m // 8
    per_row = lay.wp // 8
    return (run // per_row) * lay.pitch + (run % per_row) * 16


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
    rows of the tile starting at pixel m0: lane l = 8i + r gives row r of
    matrix i, i.e. K row 16 step + r + 8 (i // 2) at pixel run (i % 2)."""
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


def reference(x: np.ndarray, chans, y0: int, m0: int, step: int, lay: Layout) -> np.ndarray:
    h, w = x.shape[1:]
    a = np.zeros((64, 16), np.int64)
    for m in range(64):
        run = (m0 + m) // 8
        oy = y0 + run // (lay.wp // 8)
        ox = (run % (lay.wp // 8)) * 8 + (m0 + m) % 8
        for k in range(16):
            s, t = divmod(16 * step + k, KH * KW)
            kh, kw = divmod(t, KW)
            iy, ix = oy + kh - PAD, ox + kw - PAD
            inside = oy < h and ox < w and 0 <= iy < h and 0 <= ix < w
            a[m, k] = x[chans[s], iy, ix] if inside else 0
    return a


def check(seed: int, width: int, rows: int, height: int | None = None) -> None:
    """Every m64 tile and k16 step of a 16-channel stage of one group."""
    rng = np.random.default_rng(seed)
    height = height or rows
    x = rng.integers(1, 65535, size=(20, height, width), dtype=np.uint16)  # never 0: padding shows
    chans = sorted(rng.choice(20, size=16, replace=False))
    lay = Layout(width=width, rows=rows, slots=16)
    smem = fill(x, chans, 0, lay)
    tiles = -(-rows * lay.wp // 64)
    for tile in range(tiles):
        for step in range(16 * 9 // 16):
            regs = [ldmatrix_x4_trans(smem, lane_addresses(step, w, 64 * tile, lay)) for w in range(4)]
            got = a_from_fragments(regs)
            want = reference(x, chans, 0, 64 * tile, step, lay)
            # pixels past the group's rows (the last tile's tail) are not stored: ignore them
            real = np.array([(64 * tile + m) // lay.wp < rows for m in range(64)])
            if not np.array_equal(got[real], want[real]):
                bad = np.argwhere((got != want) & real[:, None])[0]
                raise AssertionError(f"W={width} rows={rows} tile {tile} step {step}: A{tuple(bad)} = "
                                     f"{got[tuple(bad)]}, want {want[tuple(bad)]}")


def main() -> int:
    for seed, (width, rows) in enumerate([(7, 7), (14, 9), (28, 4), (12, 5), (9, 3)]):
        check(seed, width, rows)
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
