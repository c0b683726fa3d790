"""The CuTe layouts the Hopper 1xN forward relies on, checked without a GPU.

tests/cpp/cute_layouts.cpp is host code built with nvcc against the CuTe
headers: it checks with CuTe's layout algebra that each k16 B tile
(BTileLayout<BN>, the swizzled MN-major smem layout the wgmma descriptor is
made from) is a bijection of BN x 16 elements whose 16-byte pieces stay whole
and aligned (what the cp.async copies assume), and prints every mapping. Here
those mappings must equal the formulas of scripts/emulate_block1xn_sm90.py,
so the emulation's B addressing, A fragment table (ALayout_64x16, the RS
wgmma's register operand) and accumulator table (CLayout_64xN) are CuTe's.
Skipped without nvcc or the CuTe headers.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from test_nvcc_compile import CUTLASS, NVCC, ROOT

pytestmark = [
    pytest.mark.skipif(NVCC is None, reason="nvcc not found"),
    pytest.mark.skipif(CUTLASS is None, reason="CuTe headers not found (pip install --no-deps nvidia-cutlass)"),
]

_SCRIPTS = str(ROOT / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)


@pytest.fixture(scope="module")
def mappings(tmp_path_factory) -> dict[str, list[tuple[int, ...]]]:
    exe = tmp_path_factory.mktemp("cute") / "cute_layouts"
    build = subprocess.run(
        [NVCC, "-std=c++17", "-O1", "-I", "csrc/include", "-I", "csrc", "-I", str(CUTLASS),
         "tests/cpp/cute_layouts.cpp", "-o", str(exe)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")
    assert "OK" in lines, run.stdout[-2000:]
    out: dict[str, list[tuple[int, ...]]] = {"A": [], "B": [], "C": []}
    for line in lines:
        if line[:1] in out:
            out[line[0]].append(tuple(int(v) for v in line.split()[1:]))
    return out


def test_b_tile_layout(mappings):
    import emulate_block1xn_sm90 as emu
    rows = mappings["B"]
    assert len(rows) == 16 * 16 + 32 * 16 + 64 * 16
    for bn, n, k, off in rows:
        assert emu.b_layout(bn, n, k) == off, (bn, n, k)


def test_a_fragment_layout(mappings):
    import emulate_block1xn_sm90 as emu
    rows = mappings["A"]
    assert len(rows) == 128 * 8
    for t, v, m, k in rows:
        assert emu.ptx_a_layout(t % 32, t // 32, v) == (m, k), (t, v)
    # and the registers the kernel fills: register r holds values 2r, 2r+1
    for t, v, m, k in rows:
        h, lo, hi = emu.thread_a_regs(t % 4)[v // 2]
        assert m == 16 * (t // 32) + (t % 32) // 4 + 8 * h
        assert k == (lo, hi)[v % 2]


def test_c_fragment_layout(mappings):
    import emulate_block1xn_sm90 as emu
    rows = mappings["C"]
    assert len(rows) == 128 * (8 + 16 + 32)
    for bn, t, v, m, n in rows:
        assert emu.ptx_c_layout(t % 32, t // 32, v) == (m, n), (bn, t, v)
        h, lane = emu.store_lane(t % 4, v)
        assert (16 * (t // 32) + (t % 32) // 4 + 8 * h, lane) == (m, n)
