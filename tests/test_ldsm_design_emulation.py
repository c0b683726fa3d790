"""scripts/emulate_ldsm_forward.py: the ldmatrix design's forward gather
(benchmarks/gpu_kernels.md) replayed lane by lane, on image widths that are
and are not multiples of 8, groups shorter and taller than a tile, within
one image and across images; and mutated, each mutation of the layout or
of the lanes' addresses caught."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))
import emulate_ldsm_forward as emu  # noqa: E402

@pytest.mark.parametrize("width,height,g0,rows", emu.CASES)
def test_every_fragment_is_the_implicit_gemm_tile(width, height, g0, rows):
    emu.check(width * 100 + rows, width, height, g0, rows)


def test_the_reference_sees_padding_and_data():
    """A tile at an image edge has both zero padding and input values (all
    nonzero), so a gather that drops the padding or shifts it is seen."""
    import numpy as np
    rng = np.random.default_rng(0)
    x = rng.integers(1, 65535, size=(1, 20, 7, 7), dtype=np.uint16)
    lay = emu.Layout(width=7, height=7, g0=0, rows=7, slots=16)
    a = emu.reference(x, list(range(16)), 0, 0, lay)
    assert (a == 0).any() and (a != 0).mean() > 0.5


def _mutant(monkeypatch, name, fn):
    monkeypatch.setattr(emu, name, fn)
    with pytest.raises(AssertionError):
        for case in emu.CASES:
            emu.check(1, *case)


def test_one_copy_for_every_tap_is_caught(monkeypatch):
    """kw from copy 0 shifted by kw elements: the rows lose their 16-byte
    alignment (why the design keeps Kw copies)."""
    orig = emu.k_row_offset

    def one_copy(k, lay):
        kw = k % emu.KW
        return orig(k - kw, lay) + 2 * kw
    _mutant(monkeypatch, "k_row_offset", one_copy)


def test_wrong_copy_is_caught(monkeypatch):
    orig = emu.k_row_offset

    def next_copy(k, lay):
        kw = k % emu.KW
        return orig(k, lay) + ((kw + 1) % emu.KW - kw) * lay.plane
    _mutant(monkeypatch, "k_row_offset", next_copy)


def test_matrices_in_the_wrong_order_are_caught(monkeypatch):
    """Lanes 8-15 giving the second K half instead of the second pixel half."""
    def swapped(step, warp, m0, lay):
        return [emu.k_row_offset(16 * step + l % 8 + 8 * ((l // 8) % 2), lay)
                + emu.run_offset(m0 + 16 * warp + 8 * (l // 16), lay) for l in range(32)]
    _mutant(monkeypatch, "lane_addresses", swapped)


def test_lanes_that_ignore_image_boundaries_are_caught(monkeypatch):
    """Rows after an image boundary sit one zero row lower in shared memory."""
    orig = emu.run_offset
    monkeypatch.setattr(emu, "run_offset", lambda m, lay: orig(m, lay) - lay.segment(
        lay.g0 + (m // 8) // (lay.wp // 8)) * lay.pitch)
    across = [c for c in emu.CASES if (c[2] + c[3] - 1) // c[1] > c[2] // c[1]]
    assert across
    with pytest.raises(AssertionError):
        for case in across:
            emu.check(1, *case)


def test_halo_one_row_off_is_caught(monkeypatch):
    orig = emu.run_offset
    _mutant(monkeypatch, "run_offset", lambda m, lay: orig(m, lay) + lay.pitch)


def test_non_trans_ldmatrix_is_caught(monkeypatch):
    """The A tile is MN-major in shared memory (a K row is 8 pixels): the
    plain ldmatrix would give the transpose."""
    import numpy as np

    def plain(smem, addr):
        mats = np.stack([np.stack([smem[addr[8 * i + r]:addr[8 * i + r] + 16].view(np.uint16) for r in range(8)])
                         for i in range(4)])
        regs = np.zeros((32, 4), np.uint32)
        for t in range(32):
            for i in range(4):
                regs[t, i] = int(mats[i, t // 4, 2 * (t % 4)]) | int(mats[i, t // 4, 2 * (t % 4) + 1]) << 16
        return regs
    _mutant(monkeypatch, "ldmatrix_x4_trans", plain)
