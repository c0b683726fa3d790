"""The Hopper 1xN forward's gather and schedule, checked on the CPU.

scripts/emulate_block1xn_sm90.py replays forward_sm90_kernel thread by thread
(plan, work items, stage ring, slot decode, cp.async pieces, the A register
gather, the wgmma fragments, the epilogue stores). Every output must be
written exactly once and match float64 F.conv2d on the decoded weight. The
mutation cases swap one index the kernel computes (an A register, the
accumulator-to-lane map, the slot dedupe, a pixel offset) and must fail: the
check is sensitive to the mistakes it is meant to catch.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("torch")

_SCRIPTS = str(Path(__file__).resolve().parents[1] / "scripts")
if _SCRIPTS not in sys.path:
    sys.path.append(_SCRIPTS)
import emulate_block1xn_sm90 as emu  # noqa: E402
from cuda_emulation import TOLERANCE, Geo  # noqa: E402

# (Geo args, N, density, input order, output order, empty rows)
CASES = [
    # 3x3, NHWC in, NCHW out; two tiles across (out_w 12 > TW 8? no: TW 16)
    ((2, 16, 10, 12, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1), 16, 0.5, "nhwc", "nchw", ()),
    # NCHW in with 16-byte pieces, NHWC out, a fully pruned row
    ((2, 16, 9, 16, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1), 16, 0.6, "nchw", "nhwc", (1,)),
    # stride 2, asymmetric kernel, in_w 28 (8-byte pieces), N=64 (BN 64)
    ((1, 8, 11, 28, 64, 3, 2, (2, 2), (1, 0), (1, 1), 1), 64, 0.7, "nchw", "nchw", ()),
    # dilation 2, groups 2, short last row (cout_g 40 = 16 + 16 + 8), in_w 14 (4-byte pieces)
    ((2, 16, 13, 14, 80, 3, 3, (1, 1), (2, 2), (2, 2), 2), 16, 0.5, "nchw", "nhwc", ()),
    # groups 2 in NHWC (chunks cross nothing: cin_g 8), N=48 -> three BN=16 chunks
    ((1, 16, 7, 7, 96, 3, 3, (1, 1), (1, 1), (1, 1), 2), 48, 0.8, "nhwc", "nhwc", (0,)),
    # 1x1 stride 2, many channels: 20 kept > kc=16, two stages per row; N=32
    ((2, 40, 12, 18, 64, 1, 1, (2, 2), (0, 0), (1, 1), 1), 32, 0.6, "nhwc", "nchw", ()),
    # taller than one tile (out 20 x 9: TW 16, TH 8 -> 3 tiles down), 5x5, all rows pruned but one
    ((1, 8, 24, 13, 32, 5, 5, (1, 1), (2, 2), (1, 1), 1), 16, 0.9, "nhwc", "nchw", (0,)),
    # empty batch: nothing to launch, nothing written
    ((0, 16, 8, 8, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1), 16, 0.5, "nhwc", "nchw", ()),
]


def _id(case):
    geo, n, _, i, o, _ = case
    return f"n{geo[0]}c{geo[1]}-{geo[2]}x{geo[3]}-k{geo[5]}x{geo[6]}-s{geo[7][0]}-g{geo[10]}-N{n}-{i}-{o}"


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_sm90_forward_emulation(case):
    shape, n, density, in_order, out_order, empty = case
    err = emu.check_case(Geo(*shape), n, density, in_order, out_order, empty_rows=empty)
    assert err is not None, "the kernel declined a case it should take"
    assert err < TOLERANCE, err


def test_small_stage_budget():
    # Shared memory for only 2 kept channels per stage: 18 pairs in 2 k16
    # steps (14 padded pairs read the zero slot), rows take many stages and
    # the ring wraps several times.
    geo = Geo(1, 24, 9, 16, 32, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    plan = emu.Plan.make(geo, 16, (24 * 9 * 16, 1, 16 * 24, 24), smem_limit=34000)
    assert plan is not None and plan.kc == 2 and plan.ksteps == 2
    err = emu.check_case(geo, 16, 0.7, "nhwc", "nchw", smem_limit=34000, with_bias=False)
    assert err < TOLERANCE, err


def test_declined_layouts():
    # Odd NCHW rows (no 4-byte piece), padded strides, N not a multiple of 16:
    # the plan declines and the dispatcher runs the mma.sync kernel.
    odd = Geo(1, 8, 7, 7, 16, 3, 3, (1, 1), (1, 1), (1, 1), 1)
    assert emu.Plan.make(odd, 16, (8 * 49, 49, 7, 1)) is None
    assert emu.check_case(odd, 16, 0.5, "padded", "nchw") is None
    assert emu.Plan.make(odd, 8, (8 * 49, 1, 56, 8)) is None


_thread_a_regs = emu.thread_a_regs


def _mutant_a(t):
    regs = _thread_a_regs(t)
    return [regs[0], regs[2], regs[1], regs[3]]  # registers 1 and 2 swapped


MUTANTS = {
    # A registers 1 and 2 swapped (row g+8 at k 2t <-> row g at k 2t+8):
    # pixels receive other pixels' pairs -> wrong values.
    "a_register": ("thread_a_regs", _mutant_a),
    # The accumulator's pixel-half and lane-parity bits swapped in the
    # epilogue: outputs go to the wrong pixel/lane -> some written twice,
    # others never (the write count fails) and wrong values.
    "c_lane": ("store_lane", lambda t, v: (v & 1, 8 * (v >> 2) + 2 * t + ((v >> 1) & 1))),
    # The ballot's neighbour taken from the lane itself: no channel after
    # lane 0 is "fresh", every kept channel maps to slot 0 -> wrong channels.
    "dedupe": ("shfl_up", lambda v: v),
    # A tap's dy and dx pitches swapped: the gather reads the wrong halo element.
    "tap_pitch": ("tap_offset", lambda tap, geo, p: (tap // geo.kw) * geo.dil_h * p.col_pitch
                  + (tap % geo.kw) * geo.dil_w * p.row_pitch),
}


@pytest.mark.parametrize("mutation", sorted(MUTANTS))
def test_mutations_fail(mutation, monkeypatch):
    name, fn = MUTANTS[mutation]
    monkeypatch.setattr(emu, name, fn)
    shape, n, density, in_order, out_order, empty = CASES[0]
    try:
        err = emu.check_case(Geo(*shape), n, density, in_order, out_order, empty_rows=empty)
    except AssertionError:
        return  # a write-count, range or alignment check caught it
    assert not err < TOLERANCE, f"{mutation}: the mutant passed ({err})"
