"""The stripe CUDA kernels' index math, checked on the CPU.

scripts/emulate_stripe_cuda.py mirrors forward_kernel, grad_input_kernel and
grad_weight_kernel (with split-K) CTA by CTA and thread by thread (staging
indices, micro-tiles, epilogue addressing) over flat buffers read through
strides; every output element must be written exactly once and match float64
F.conv2d and its autograd. Both tile configurations are checked (kBK/kOC =
16/128 for fp32 accumulation, 8/64 for fp64). The CUDA code itself cannot run
here; this is the check that its tiling covers every element correctly.
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
import emulate_stripe_cuda as emu  # noqa: E402
from cuda_emulation import assert_within_tolerance  # noqa: E402


@pytest.mark.parametrize("bk,oc", [(16, 128), (8, 64)], ids=["acc32", "acc64"])
@pytest.mark.parametrize("case", emu.CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_stripe_cuda_emulation(case, bk, oc):
    shape, density, order = case
    errs = emu.check_case(emu.Geo(*shape), density, order, bk=bk, oc=oc)
    assert_within_tolerance(errs)


def test_split_k_and_no_bias():
    # Few columns and many pixels: grad-weight takes the split-K path.
    geo = emu.Geo(2, 3, 24, 20, 4, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    errs = emu.check_case(geo, 0.5, "nhwc", with_bias=False, sms=8)
    assert_within_tolerance(errs)


@pytest.mark.parametrize("case", emu.MMA_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_stripe_forward_mma_emulation(case):
    # Every mma.sync rebuilt from the 32 lanes' registers with the PTX
    # fragment tables: the register packing and fragment-to-output mapping.
    shape, density, order = case
    err = emu.check_mma_case(emu.Geo(*shape), density, order)
    assert_within_tolerance({"forward_mma": err})
