"""The pattern CUDA kernels' index math, checked on the CPU.

scripts/emulate_pattern_cuda.py mirrors forward_kernel, grad_input_kernel and
grad_weight_kernel (with split-K) CTA by CTA, warp by warp and lane by lane
(pixel walks, shuffled kernel metadata, tap table, stride phases, carried
pixel counters, shuffle-tree and warp-ordered reductions) over flat buffers
read through strides; every output element must be written exactly once and
match float64 F.conv2d and its autograd on Pattern.to_dense(). Grad-weight is
checked with both sweep widths (16 accumulators for fp32 accumulation, 8 for
fp64). The CUDA code itself cannot run here; this is the check that its
decomposition covers every element correctly.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("torch")

# The emulations live in scripts/ (run there directly) and import the shared
# scripts/cuda_emulation.py as a top-level module.
_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)
import emulate_pattern_cuda as emu  # noqa: E402
from cuda_emulation import assert_within_tolerance  # noqa: E402


@pytest.mark.parametrize("case", emu.CASES, ids=lambda c: f"{c[0]}-{c[1][0]}-{c[2]}")
def test_pattern_cuda_emulation(case):
    shape, build, order = case
    errs = emu.check_case(emu.Geo(*shape), build, order)
    assert_within_tolerance(errs)


def test_no_bias_and_other_split_count():
    # No bias; few SMs: grad-weight unsplit on a shape that splits at 132.
    geo = emu.Geo(2, 2, 72, 72, 2, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    errs = emu.check_case(geo, ("mask", 0.5), "padded", with_bias=False, sms=1, seed=3)
    assert_within_tolerance(errs)


def test_emulation_is_sensitive(monkeypatch):
    # Dropping the stride-phase test of grad-input must be caught.
    geo = emu.Geo(2, 6, 9, 8, 4, 3, 2, (2, 3), (1, 0), (2, 1), 2)
    real = emu.tap_phase
    monkeypatch.setattr(emu, "tap_phase", lambda g, t: real(g, t)[:1] + (0,) + real(g, t)[2:3] + (0,))
    with pytest.raises(AssertionError):
        errs = emu.check_case(geo, ("mask", 0.5), "nchw")
        assert_within_tolerance(errs)
