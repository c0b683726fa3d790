"""The gate before building: an upper-bound model of the ldmatrix design
for the Hopper 1xN kernels (benchmarks/gpu_kernels.md, "The ldmatrix
design"), against the issue's targets, on the same H200 figures and cuDNN
baseline as gpu_model.py.

    python benchmarks/gpu_design_model.py --json benchmarks/results/gpu-sm90/gpu_design_model.json

The main loops of the bf16 forward, grad-input and grad-weight and of the
fp32 N = 4 forward exist as code (benchmarks/gpu_loop_probe.cu) and are
counted in SASS (cuda_sm90_counts.py --probe); what surrounds them (the
copy engine's fills, the epilogue, stream-K's partial tiles) is estimated
here, each estimate named where it is used. Per work item the
time is the largest of: tensor cores (executed MACs at the GEMM rate, plus
an assumed fixed cost per wgmma), instruction issue (4 warp instructions
per clock per SM), shared-memory wavefronts (one 128-byte wavefront per
clock per SM; loads conflict-free, as the design's pitches make them),
L2 traffic (the fills, at gpu_model.L2_BPS) and HBM (compulsory bytes).
The SM-parallel terms are spread evenly by stream-K (forward, grad-weight)
or quantised over the 132 SMs (whole work items: grad-input, fp32). Load
imbalance between block rows and latency are not modelled: a measurement
is slower.

What is least known is the tensor cores' rate on the design's narrow
wgmma shapes (m64n32k16, and m64n8k16 in grad-input): the bound takes the
8192^3 GEMM's rate per MAC with no fixed cost per instruction, and each
target is also given with WGMMA_FIXED_CLK clocks added per wgmma.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import sys

import gpu_model as gm

BN = 32                      # lanes of one block row (the targets' N)
MT = 4                       # m64 tiles per warpgroup (gpu_loop_probe.cu kMT)
WGS = 2                      # consumer warpgroups per CTA
WARPS = 4 * WGS
MACS_PER_CLK_SM = gm.FLOPS[("wgmma", "bf16")] / 2 / (gm.SMS * gm.CLOCK_HZ)
FFMA_PER_CLK_SM = gm.FLOPS[("fma", "fp32")] / 2 / (gm.SMS * gm.CLOCK_HZ)
WGMMA_FIXED_CLK = 4          # the sensitivity case: clocks per wgmma beyond its MACs (assumption)
# Estimates of what the probe does not hold (instructions per warp unless said):
TMA_ISSUE = 8                # one bulk tensor copy issued: coordinates, descriptor, the copy
BARRIER = 6                  # a stage's full/empty handshake on the producer side
EPILOGUE_PER_ACC = 1.5       # per fp32 accumulator per thread: convert, pack, shared store
E = 2                        # bf16 bytes


def _terms(work: int, per_item: dict, hbm_bytes: float, fixed_clk_per_wgmma: float,
           stream_k: bool) -> dict:
    """Layer time (the terms in seconds) from per-item clocks and bytes. A persistent grid of one
    CTA per SM runs the work items; with stream_k its SMs split the items'
    stages evenly (an item cut between two SMs costs one fp32 partial tile
    more, written and read back: per_item["fixup"] bytes, one per SM), else
    whole items go round-robin and the last round quantises."""
    clk = gm.SMS * gm.CLOCK_HZ
    waves = 1.0 if stream_k else gm.cdiv(work, gm.SMS) * gm.SMS / work
    fix = gm.SMS * per_item.get("fixup", 0) if stream_k else 0
    tensor = (per_item["macs"] / MACS_PER_CLK_SM + per_item["wgmma"] * fixed_clk_per_wgmma
              + per_item.get("ffma", 0) / FFMA_PER_CLK_SM)
    t = dict(compute_s=work * tensor / clk * waves,
             issue_s=work * per_item["warp_instr"] / gm.ISSUE_PER_CLK_SM / clk * waves,
             smem_s=(work * per_item["wavefronts"] + 2 * fix / 128) / clk * waves,
             l2_s=(work * per_item["l2_bytes"] + 2 * fix) / gm.L2_BPS * waves,
             hbm_s=hbm_bytes / gm.HBM_BPS)
    bound = max(t, key=t.get)
    return dict(t, time_s=t[bound], bound=bound[:-2], work_items=work, wave_factor=round(waves, 3))


def forward(L: gm.Layer, s: float, probe: dict, fixed: float, g: int = 1) -> dict:
    """Work item: a group of image rows (rows padded to runs of 8) x ``g``
    block rows, 4 // g m64 tiles a warpgroup (64 accumulators a thread).
    K runs over the union of the g rows' kept channels in classes (which
    of the rows keep the channel), each class padded to whole k16 steps:
    an A fragment is loaded once and serves a wgmma for every row of its
    class, and a channel's halo, held in Kw = 3 shifted copies, is loaded
    once for the g rows. A stage is 16 channels (9 k16 steps). Stream-K
    over the stages."""
    w, wp = L.hw, gm.pad(L.hw, 8)
    mt = MT // g * WGS                          # m64 tiles a work item
    r = mt * 64 // wp                           # image rows a group
    groups = gm.cdiv(gm.BATCH * w, r)
    rows, kept = L.c // BN, L.c * (1 - s)
    union = L.c * (1 - s ** g)
    classes = 2 ** g - 1
    a_steps = math.ceil(union * 9 / 16) + classes / 2  # half a step of padding per class
    wgmma = mt * g * kept * 9 / 16
    stages = a_steps / 9
    loop = probe["forward_ldsm"]
    per_ldsm = (loop["loop_instructions"] - loop["loop_by_class"]["wgmma"]) / loop["loop_by_class"]["ldsm"]
    ldsm = mt / WGS * a_steps  # per warp: one LDSM per tile and step
    # Image segments of the group (r / w + 1 on average) are copied one TMA
    # box each, rows -1 .. h - 1 of the image: a segment's top padding row
    # is the one under the segment before it, so a group adds one zero row
    # per segment and one at the end.
    halo_rows = r + (r / w + 1) + 1
    # a plane 16 B longer than its rows puts ldmatrix's 8 rows (8 planes) in 8 bank groups
    halo = union * 3 * (halo_rows * wp * E + 16)
    b_bytes = g * kept * 9 * BN * E
    out_tile = g * r * wp * BN * E
    per_item = dict(
        wgmma=wgmma, macs=wgmma * 64 * BN * 16,
        warp_instr=WARPS * (ldsm * per_ldsm + wgmma / WGS) + stages * ((16 * 3 + g) * TMA_ISSUE + BARRIER)
        + WARPS * (mt / WGS) * g * 16 * EPILOGUE_PER_ACC + TMA_ISSUE,
        wavefronts=WARPS * ldsm * 4 + wgmma * BN * 16 * E / 128 + (halo + b_bytes) / 128 + 2 * out_tile / 128,
        l2_bytes=halo + b_bytes + out_tile, fixup=out_tile * 2)
    hbm = 2 * L.act_bytes(E) + rows * kept * (BN * 9 * E + 4)
    work = groups * gm.cdiv(rows, g)
    return dict(_terms(work, per_item, hbm, fixed, stream_k=True),
                useful_macs=L.p * rows * kept * BN * 9, executed_macs=work * per_item["macs"],
                plan=dict(rows_per_cta=g, rows_per_group=r, m_tiles=mt, a_steps=round(a_steps, 1)))


def forward_best(L: gm.Layer, s: float, probe: dict, fixed: float) -> dict:
    """The forward with the block rows a CTA shares (1, 2 or 4) that is fastest."""
    return min((forward(L, s, probe, fixed, g) for g in (1, 2, 4)), key=lambda p: p["time_s"])


def grad_weight(L: gm.Layer, s: float, probe: dict, fixed: float) -> dict:
    """Work item: 128 kept channels of one block row (one m64 tile a
    warpgroup, all 9 taps in its accumulators) x a share of the pixels (K).
    K runs over the input pixels in a layout with one zero column after
    each row (so a tap's shift never wraps into the next row), padded to
    k16 steps per image; a stage is 8 steps. Stream-K over the stages; the
    fp32 partial tiles of items cut between SMs are summed in L2."""
    w = L.hw
    rows, kept = L.c // BN, L.c * (1 - s)
    ctas = gm.cdiv(math.ceil(kept), 128)
    mt = math.ceil(kept) / ctas / 64  # m64 tiles per CTA (<= 2)
    slots = gm.BATCH * gm.pad(w * (w + 1), 16)
    stages = slots / 128
    loop = probe["grad_weight_shift"]
    scale = mt / WGS  # the probe's loop is one tile a warpgroup
    x_tile = mt * 64 * 128 * E
    dy_tile = (128 + 2 * (w + 1) + 2) * BN * E
    partial = mt * 64 * 9 * BN * 4
    wg = mt * 8 * 9
    per_item = dict(
        wgmma=stages * wg, macs=stages * wg * 64 * BN * 16,
        warp_instr=stages * (WARPS * loop["loop_instructions"] * scale + (mt * 64 / 8 + 1) * TMA_ISSUE
                             + BARRIER) + WARPS * mt / WGS * 9 * 16 * EPILOGUE_PER_ACC,
        wavefronts=stages * (WARPS * loop["loop_by_class"]["ldsm"] * 4 * scale + wg * BN * 16 * E / 128
                             + (x_tile + dy_tile) / 128) + partial / 128,
        l2_bytes=stages * (x_tile + dy_tile) + partial, fixup=partial)
    hbm = 2 * L.act_bytes(E) + rows * kept * BN * 9 * E
    return dict(_terms(rows * ctas, per_item, hbm, fixed, stream_k=True),
                useful_macs=L.p * rows * kept * BN * 9, executed_macs=rows * ctas * per_item["macs"],
                plan=dict(ctas_per_row=ctas, m_tiles=mt, stages=round(stages, 2)))


def union_efficiency(c: int, s: float, group: int = 8, seed: int = 0) -> float:
    """Kept (channel, block row) pairs over the pairs grad-input computes when
    input channels go in groups of ``group`` (one n8 wgmma) and a group
    computes every block row any of its channels keeps. Channels are grouped
    greedily (the next channel is the one adding the fewest rows to the
    group's union), on a topology with kept blocks at random."""
    rows = c // BN
    rng = random.Random(seed)
    keep = [frozenset(r for r in range(rows) if rng.random() >= s) for _ in range(c)]
    left = sorted(range(c), key=lambda i: -len(keep[i]))
    computed = 0
    while left:
        union, members = set(keep[left[0]]), [left.pop(0)]
        while len(members) < group and left:
            best = min(left, key=lambda i: (len(keep[i] - union), -len(keep[i])))
            left.remove(best)
            members.append(best)
            union |= keep[best]
        computed += group * len(union)
    return sum(map(len, keep)) / computed


def grad_input(L: gm.Layer, s: float, probe: dict, fixed: float) -> dict:
    """Work item: 128 pixels (one m64 tile a warpgroup) x a chunk of 128
    input channels in 16 groups of 8, grouped so a group's channels share
    block rows (union_efficiency). Per (block row, tap) each warp loads
    grad_out's [16 pixels x 32 lanes] fragment once (two ldmatrix.x4) and
    issues two m64n8k16 wgmmas (K = 32) for every group that needs the row
    (gpu_loop_probe.cu grad_input_group_loop, counted with all 16 groups
    taken: the LDSMs and a tap's arrive/commit/wait are charged per tap, the
    rest per group). Grad-input's block is one channel wide in its N, so its
    MMA is as narrow as the grouping."""
    rows, chunk = L.c // BN, min(L.c, 128)
    u = union_efficiency(L.c, s)
    groups = chunk / 8 * (1 - s) / u  # groups computed per (row, tap)
    loop = probe["grad_input_group"]
    per_tap = loop["loop_by_class"]["ldsm"] / 9 + 3
    per_group = (loop["loop_instructions"] / 9 - per_tap) / 16
    steps = rows * 9
    wgmma = steps * WGS * 2 * groups
    halo_px = 10 * 18  # an 8 x 16 tile with its halo
    w_bytes = rows * 9 * BN * 8 * groups * E
    per_item = dict(
        wgmma=wgmma, macs=wgmma * 64 * 8 * 16,
        warp_instr=steps * (WARPS * (per_tap + per_group * groups)) + rows * 2 * TMA_ISSUE
        + WARPS * chunk / 2 * EPILOGUE_PER_ACC,
        wavefronts=steps * WARPS * 2 * 4 + wgmma * 8 * 16 * E / 128
        + (rows * halo_px * BN * E + w_bytes) / 128 + 2 * 128 * chunk * E / 128,
        l2_bytes=rows * halo_px * BN * E + w_bytes + 128 * chunk * E)
    work = gm.cdiv(L.p, 128) * gm.cdiv(L.c, chunk)
    hbm = 2 * L.act_bytes(E) + rows * L.c * (1 - s) * BN * 9 * E
    return dict(_terms(work, per_item, hbm, fixed, stream_k=False),
                useful_macs=L.p * rows * L.c * (1 - s) * BN * 9, executed_macs=work * per_item["macs"],
                plan=dict(union_efficiency=round(u, 3), groups_per_row_tap=groups))


def forward_fp32(L: gm.Layer, s: float, probe: dict, n: int = 4) -> dict:
    """fp32 with TF32 off, N = 4, on CUDA cores (gpu_loop_probe.cu
    forward_fp32_window_loop: a thread's run of 8 pixels x 4 lanes, the
    taps' input window loaded once per kernel row). Work item: 256 runs
    (rows of the image padded to runs of 8) x one block row; its kept
    channels' halo planes (fp32, one copy) come from L2, one per channel."""
    w, wp = L.hw, gm.pad(L.hw, 8)
    rows, kept = L.c // n, L.c * (1 - s)
    r = 256 * 8 // wp
    work = gm.cdiv(gm.BATCH * w, r) * rows
    loop = probe["forward_fp32_window"]
    halo_rows = r + (r / w + 1) + 1  # as the bf16 forward's
    halo = kept * halo_rows * (wp + 8) * 4
    threads = 256
    per_item = dict(wgmma=0, macs=0,  # no tensor cores: FFMA below
                    warp_instr=kept * threads / 32 * loop["loop_instructions"] + kept * TMA_ISSUE,
                    wavefronts=kept * threads / 32 * (3 * (2 * 4 + 2) + 9) + halo / 128,
                    l2_bytes=halo + kept * 9 * n * 4 + r * wp * n * 4)
    ffma = kept * threads * loop["loop_by_class"]["ffma"]  # one MAC each
    t = _terms(work, dict(per_item, ffma=ffma), 2 * L.act_bytes(4) + rows * kept * (n * 9 * 4 + 4), 0.0,
               stream_k=False)
    return dict(t, useful_macs=L.p * rows * kept * n * 9, executed_macs=work * ffma,
                plan=dict(rows_per_group=r))


PASSES = {"forward": forward_best, "grad-weight": grad_weight, "grad-input": grad_input}


def rows_for(probe: dict, fixed: float) -> list[dict]:
    out = []
    for pass_, fn in PASSES.items():
        for s in gm.SPARSITIES:
            for c, hw in gm.LAYERS:
                L = gm.Layer(c, hw)
                p, base = fn(L, s, probe, fixed), gm.cudnn(L, "bf16")
                out.append(dict(kind="block1xn", backend="design", dtype="bf16", n=BN, sparsity=s,
                                layer=L.name, cudnn=base, speedup=base["time_s"] / p["time_s"],
                                **{"pass": pass_}, **p))
    for s in gm.SPARSITIES:
        for c, hw in gm.LAYERS:
            L = gm.Layer(c, hw)
            p, base = forward_fp32(L, s, probe), gm.cudnn(L, "fp32")
            out.append(dict(kind="block1xn", backend="design", dtype="fp32", n=4, sparsity=s, layer=L.name,
                            cudnn=base, speedup=base["time_s"] / p["time_s"], **{"pass": "forward"}, **p))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default=gm.CUDA_COUNTS, help="cuda_sm90_counts.py --probe's JSON")
    ap.add_argument("--json", required=True)
    args = ap.parse_args(argv)
    with open(args.counts) as f:
        probe = json.load(f)["probes"]
    assumptions = dict(macs_per_clk_sm=MACS_PER_CLK_SM, ffma_per_clk_sm=FFMA_PER_CLK_SM,
                       wgmma_fixed_clk_case=WGMMA_FIXED_CLK, tma_issue=TMA_ISSUE, barrier=BARRIER,
                       epilogue_per_acc=EPILOGUE_PER_ACC, l2_Bps=gm.L2_BPS, hbm_Bps=gm.HBM_BPS,
                       cudnn_efficiency=gm.CUDNN_EFFICIENCY)
    result = dict(assumptions=assumptions,
                  probe=probe, rows=rows_for(probe, 0.0), rows_fixed_clk=rows_for(probe, WGMMA_FIXED_CLK))
    result["targets"] = gm.targets(result["rows"], "design")
    result["targets_fixed_clk"] = gm.targets(result["rows_fixed_clk"], "design")
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(table(result))
    print("\n" + gm.targets_table(result))
    print(f"\nwith {WGMMA_FIXED_CLK} clocks per wgmma:\n" + gm.targets_table(result, "targets_fixed_clk"))
    return 0


def table(result: dict) -> str:
    lines = ["| pass | sparsity | layer | speed-up | compute | issue | smem | l2 | hbm | bound "
             f"| useful / executed | speed-up, +{WGMMA_FIXED_CLK} clk/wgmma |", "|---" * 12 + "|"]
    for r, rf in zip(result["rows"], result["rows_fixed_clk"]):
        if r["dtype"] != "bf16":
            continue
        us = " | ".join(f"{r[k] * 1e6:.1f}" for k in ("compute_s", "issue_s", "smem_s", "l2_s", "hbm_s"))
        lines.append(f"| {r['pass']} | {r['sparsity']:g} | {r['layer']} | {r['speedup']:.2f}x | {us} "
                     f"| {r['bound']} | {r['useful_macs'] / r['executed_macs']:.2f} | {rf['speedup']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
