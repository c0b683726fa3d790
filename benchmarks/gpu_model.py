"""An upper-bound performance model of the library's Triton kernels on an
H200, from their sm_90 compile report (``triton_sm90.py``), against a cuDNN
dense baseline modelled at a stated efficiency.

    python benchmarks/gpu_model.py --json benchmarks/results/gpu-sm90/gpu_model.json

For each kind x pass x ResNet-50 3x3 layer (batch 64) x dtype x N x sparsity,
and each config the launcher autotunes over, the predicted time is the
largest of three terms, each assuming everything else is free (so the
prediction is a lower bound on time, an upper bound on speed-up):

- ``compute_s``: MACs the kernel executes (useful ones plus what its tiles
  pad: N to BLOCK_N, K and pixel tails, taps of a tile's union) at the rate
  of the instruction its dot lowers to (the compile report's ``dot``);
- ``issue_s``: those MACs over the main loop's MACs per issued warp
  instruction (compile report: PTX instructions per loop iteration, PTX
  taken as SASS one-for-one), at 4 warp instructions per clock per SM;
- ``hbm_s``: compulsory HBM bytes (activations in and out once, kept weights
  and indices) at the measured copy bandwidth.

A fourth term, ``l2_s``, is reported beside them but not in the bound: the
bytes the main loop's loads request, every iteration, at an assumed L2
bandwidth, with no L1 reuse (taps and rows re-reading the same input hit L1
on a GPU): pessimistic, and the L2 bandwidth is unmeasured. Where it exceeds
the bound, operand traffic may bind before instruction issue does.

The SM-parallel terms (compute, issue, L2) are scaled by the last wave's
quantisation over 132 SMs (an SM is assumed at full rate with whatever
programs it holds). The autotuner is assumed to pick the fastest config.
Latency, occupancy, bank conflicts and load imbalance between rows are not
modelled: a measured time should be slower than predicted, never faster.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "benchmarks", "results", "gpu-sm90", "triton_sm90.json")
# SASS counts of the CUDA Hopper forward (benchmarks/cuda_sm90_counts.py).
CUDA_COUNTS = os.path.join(ROOT, "benchmarks", "results", "gpu-sm90", "cuda_sm90_counts.json")

# H200 (SXM): figures measured on one here (/work/.library/device/KINDS.md)
# where there is one, else the datasheet, else an assumption (said so).
SMS = 132
CLOCK_HZ = 1.98e9  # SM clock read just after a bf16 GEMM (KINDS.md)
ISSUE_PER_CLK_SM = 4  # one warp instruction per scheduler per clock
HBM_BPS = 4.3e12  # device-to-device copy, measured (datasheet 4.8e12)
L2_BPS = 10e12  # assumption: no measurement here; H100 microbenchmarks report 5.5-12 TB/s
# Dense FLOP/s by (dot lowering, dtype). bf16 wgmma: the 8192^3 GEMM measured
# (788 TFLOP/s; datasheet 989). mma.sync on Hopper tops out near 2/3 of that
# (perf_anchors.md 4.2). FMA: 128 FFMA/clk/SM x 132 x 1.98 GHz (datasheet 67).
FLOPS = {("wgmma", "bf16"): 788e12, ("mma.sync", "bf16"): 788e12 * 2 / 3,
         ("fma", "bf16"): 67e12, ("fma", "fp32"): 67e12, ("mma.sync", "fp32"): 67e12}
# cuDNN dense baseline: a fraction of the dense rate. perf_anchors.md 4.1
# calibrates its targets on cuDNN at 0.7-0.8 of 790 TFLOP/s on C >= 128
# layers: 0.75 here. fp32 with TF32 off (the benchmark's strict baseline)
# runs on FFMA: 0.75 of 67 TFLOP/s is an assumption (no anchor measured).
CUDNN_EFFICIENCY = 0.75
CUDNN_FLOPS = {"bf16": 788e12 * CUDNN_EFFICIENCY, "fp32": 67e12 * CUDNN_EFFICIENCY}
BYTES = {"bf16": 2, "fp32": 4}

BATCH, K = 64, 3
GW_SHIFT_MIN_KEPT = 24  # sparsekernels/triton/block1xn.py _GW_SHIFT_MIN_KEPT
LAYERS = [(64, 56), (128, 28), (256, 14), (512, 7)]  # (channels in = out, H = W), 3x3, stride 1
TARGET_LAYERS = [(128, 28), (256, 14), (512, 7)]
SPARSITIES = (0.5, 0.75, 0.9)
PATTERN_CONNECTIVITY = (0.0, 0.5, 0.75)  # 4-of-9 patterns, this fraction of kernels dropped


def cdiv(a, b):
    return -(-a // b)


def pad(x, tile):
    """``x`` rounded up to whole tiles (a tile's tail is computed anyway)."""
    return cdiv(x, tile) * tile


class Layer:
    """A ResNet-50 3x3 layer at BATCH: C -> C channels at H x W, same padding."""

    def __init__(self, c: int, hw: int):
        self.c, self.hw = c, hw
        self.p = BATCH * hw * hw  # output (= input) pixels
        self.dense_macs = self.p * c * c * K * K

    @property
    def name(self):
        return f"{self.c}@{self.hw}"

    def act_bytes(self, e: int) -> int:
        return self.p * self.c * e  # one activation tensor (x, y, dy or dx)


def cudnn(layer: Layer, dtype: str) -> dict:
    """Dense baseline of one pass (forward, dgrad and wgrad alike): FLOPs at
    CUDNN_FLOPS, or the compulsory bytes (two activations, the weights)."""
    e = BYTES[dtype]
    compute = 2 * layer.dense_macs / CUDNN_FLOPS[dtype]
    hbm = (2 * layer.act_bytes(e) + layer.c * layer.c * K * K * e) / HBM_BPS
    return dict(compute_s=compute, hbm_s=hbm, time_s=max(compute, hbm),
                bound="compute" if compute >= hbm else "hbm")


# ---------------------------------------------------------------------------
# Work of each kernel: (useful MACs, executed MACs, programs, compulsory
# bytes) for one config. These follow the kernels' tiling (read from
# sparsekernels/triton/*.py); kept positions are spread uniformly at random.
# ---------------------------------------------------------------------------
def _block1xn(pass_, cfg, L: Layer, n: int, s: float, e: int, launcher: str = ""):
    rows, kept = L.c // n, L.c * (1 - s)  # block rows; kept blocks per row
    nnzb = rows * kept
    useful = L.p * nnzb * n * K * K
    w_bytes = nnzb * (n * K * K * e + 4)  # values + a col_idx each
    bn = max(16, 1 << (n - 1).bit_length())  # BLOCK_N as the host pads it
    if pass_ == "forward":  # ROWS rows x BLOCK_M pixels; per row K*K taps x kept in BLOCK_K chunks
        bm, bk = cfg["BLOCK_M"], cfg["BLOCK_K"]
        execd = pad(L.p, bm) * rows * K * K * pad(math.ceil(kept), bk) * bn
        programs = cdiv(L.p, bm) * cdiv(rows, cfg.get("ROWS", 1))
    elif pass_ == "grad-input":  # BLOCK_M pixels x BLOCK_C channels; K = every row's taps x
        # lanes (BLOCK_K of them per step), zero where the row keeps no block of the tile's
        # channels: dense cost, whatever the sparsity
        bm, bc = cfg["BLOCK_M"], cfg["BLOCK_C"]
        bk = max(16, min(1 << (n - 1).bit_length(), 32))  # as the host picks it
        execd = pad(L.p, bm) * pad(L.c, bc) * rows * K * K * pad(n, bk)
        programs = cdiv(L.p, bm) * cdiv(L.c, bc)
    else:  # grad-weight: per row, [its M rows, P] x [P, BLOCK_N] in BLOCK_M tiles, the pixels
        # split so that ~1024 programs run (host rule), the splits' fp32 partial sums written
        # and summed by a second kernel. M rows: the general kernel's kept (tap, block) pairs,
        # one dot; the shift form's (3x3, stride 1) kept blocks, a dot per tap.
        shift = launcher == "_grad_weight_shift"
        per_block, dots = (1, K * K) if shift else (K * K, 1)
        bm, bp = cfg["BLOCK_M"], cfg["BLOCK_P"]
        m_tiles = cdiv(math.ceil(nnzb * per_block), 128) + rows
        splits = max(1, min(1024 // m_tiles, cdiv(L.p, 128), 256))
        split_p = pad(cdiv(L.p, splits), 128)
        splits = cdiv(L.p, split_p)
        execd = rows * pad(math.ceil(kept * per_block), bm) * bn * dots * splits * pad(split_p, bp)
        programs = rows * cdiv(math.ceil(kept * per_block), bm) * splits
        w_bytes += 2 * splits * nnzb * K * K * n * 4 if splits > 1 else 0
    return useful, execd, programs, w_bytes


def _union(density: float, entries: int) -> float:
    """Probability that a tile of ``entries`` positions keeps at least one
    (a tile is skipped only when it keeps none)."""
    return 1 - (1 - density) ** entries


def _stripe(pass_, cfg, L: Layer, s: float, e: int):
    stripes = L.c * K * K * (1 - s)
    useful = L.p * stripes * L.c
    w_bytes = stripes * (L.c * e + 4)
    per_tap = L.c * (1 - s)  # stripes per column (tap)
    if pass_ == "forward":  # BLOCK_O rows x BLOCK_P pixels, every tap a row of the tile keeps
        bo, bp, bk = cfg["BLOCK_O"], cfg["BLOCK_P"], cfg["BLOCK_K"]
        taps = K * K * _union(1 - s, bo)
        execd = pad(L.p, bp) * pad(L.c, bo) * taps * pad(L.c, bk)
        programs = cdiv(L.p, bp) * cdiv(L.c, bo)
    elif pass_ == "grad-input":  # per tap, K = the column's stripes
        bc, bp, bs = cfg["BLOCK_C"], cfg["BLOCK_P"], cfg["BLOCK_S"]
        execd = pad(L.p, bp) * pad(L.c, bc) * K * K * pad(math.ceil(per_tap), bs)
        programs = cdiv(L.p, bp) * cdiv(L.c, bc)
    else:  # grad-weight: a column's stripes x channels, reduced over pixels
        bs, bc, bp = cfg["BLOCK_S"], cfg["BLOCK_C"], cfg["BLOCK_P"]
        tiles = K * K * cdiv(math.ceil(per_tap), bs) * cdiv(L.c, bc)
        execd = tiles * bs * bc * pad(L.p, bp)
        programs = tiles
    return useful, execd, programs, w_bytes


def _pattern(pass_, cfg, L: Layer, drop: float, e: int):
    density = (1 - drop) * 4 / (K * K)  # of the (o, i, tap) weights
    useful = L.dense_macs * density
    w_bytes = L.c * L.c * (K * K * density * e + 8)  # values + the vmap/pmap plan
    if pass_ in ("forward", "grad-input"):  # a (channel tile x K chunk) per tap, skipped if none kept
        rows = cfg["BLOCK_O"] if pass_ == "forward" else cfg["BLOCK_C"]
        bp, bk = cfg["BLOCK_P"], cfg["BLOCK_K"]
        taps = K * K * _union(density, rows * bk)  # a tap kept by any entry of the chunk
        execd = pad(L.p, bp) * pad(L.c, rows) * pad(L.c, bk) * taps
        programs = cdiv(L.p, bp) * cdiv(L.c, rows)
    else:  # grad-weight: tap x BLOCK_O x BLOCK_C, skipped if it keeps none
        bo, bc, bp = cfg["BLOCK_O"], cfg["BLOCK_C"], cfg["BLOCK_P"]
        tiles = K * K * cdiv(L.c, bo) * cdiv(L.c, bc) * _union(density, bo * bc)
        execd = tiles * bo * bc * pad(L.p, bp)
        programs = max(tiles, 1)
    return useful, execd, programs, w_bytes


def predict(record: dict, L: Layer, n, s: float) -> dict:
    """The four terms and the bound of one compiled config on one layer."""
    e, cfg, pass_ = BYTES[record["dtype"]], record["config"], record["pass"]
    if record["kind"] == "block1xn":
        useful, execd, programs, w_bytes = _block1xn(pass_, cfg, L, n, s, e, record.get("launcher", ""))
    elif record["kind"] == "stripe":
        useful, execd, programs, w_bytes = _stripe(pass_, cfg, L, s, e)
    else:
        useful, execd, programs, w_bytes = _pattern(pass_, cfg, L, s, e)
    loop = record["loop"]
    waves = cdiv(programs, SMS) * SMS / programs  # last-wave quantisation
    # MACs an iteration executes: its dot's tile, or all of them where the
    # loop holds several dots (grad-weight's shift form: one per tap)
    per_iter = max(loop["dot_tile_macs"], loop.get("issued_macs") or 0)
    iterations = execd / per_iter
    threads = 32 * cfg["num_warps"]
    macs_per_warp_instr = loop["macs_per_warp_instruction"] * per_iter / loop["dot_tile_macs"]
    terms = dict(
        compute_s=execd / (FLOPS[(record["dot"], record["dtype"])] / 2) * waves,
        issue_s=execd / macs_per_warp_instr / (ISSUE_PER_CLK_SM * SMS * CLOCK_HZ) * waves,
        hbm_s=(2 * L.act_bytes(e) + w_bytes) / HBM_BPS,
        l2_s=iterations * loop["load_bytes_per_thread"] * threads / L2_BPS * waves,
    )
    bound = max(("compute_s", "issue_s", "hbm_s"), key=terms.get)  # l2_s: reported only
    return dict(terms, time_s=terms[bound], bound=bound[:-2], useful_macs=useful,
                executed_macs=execd, programs=programs, wave_factor=round(waves, 3))


def model(records: list[dict]) -> dict:
    """Every modelled case: the fastest config's prediction against cuDNN."""
    rows = []
    # The main launchers only: the exact variants run only on a non-finite
    # input; 1xN's split sum is in its grad-weight's bytes.
    usable = [r for r in records if "error" not in r and r["dtype"] in BYTES
              and r["launcher"] in ("_forward", "_grad_input", "_grad_weight", "_grad_weight_shift")]
    cases = {}
    for r in usable:
        if r["kind"] == "block1xn":
            levels = [(r["n"], s) for s in SPARSITIES]
        elif r["kind"] == "stripe":
            levels = [(None, s) for s in SPARSITIES]
        else:
            levels = [(None, d) for d in PATTERN_CONNECTIVITY]
        for n, s in levels:
            for c, hw in LAYERS:
                # 1xN grad-weight: the kernel the host picks (every modelled
                # layer is 3x3, stride 1): the shift form for N <= 32 and rows
                # keeping enough blocks, the general one elsewhere
                if r["kind"] == "block1xn" and r["pass"] == "grad-weight" and \
                        (r["launcher"] == "_grad_weight_shift") != (n <= 32 and c * (1 - s) >= GW_SHIFT_MIN_KEPT):
                    continue
                cases.setdefault((r["kind"], r["pass"], r["dtype"], n, s, c, hw), []).append(r)
    for (kind, pass_, dtype, n, s, c, hw), recs in cases.items():
        L = Layer(c, hw)
        preds = [(predict(r, L, n, s), r) for r in recs]
        best, r = min(preds, key=lambda pr: pr[0]["time_s"])
        base = cudnn(L, dtype)
        sparsity = s if kind != "pattern" else 1 - (1 - s) * 4 / (K * K)
        rows.append(dict(kind=kind, backend="triton", **{"pass": pass_}, layer=L.name, dtype=dtype, n=n,
                         sparsity=round(sparsity, 3), config=r["config"], variant=r["variant"],
                         dot=r["dot"], registers=r["registers"], spill_bytes=r["spill_bytes"],
                         **best, cudnn=base, speedup=base["time_s"] / best["time_s"]))
    if os.path.exists(CUDA_COUNTS):
        with open(CUDA_COUNTS) as f:
            rows += cuda_rows(json.load(f))
    return dict(assumptions=_assumptions(), rows=rows, targets=targets(rows),
                cuda_sm90_targets=targets(rows, "cuda-sm90"))


# ---------------------------------------------------------------------------
# The CUDA Hopper 1xN forward (csrc/cuda/block1xn/block1xn_forward_sm90.cu):
# 256 threads (2 warpgroups x m64) per 128-pixel tile x BN lanes of one block
# row; per stage of kc kept channels, ksteps k16 steps (every stage runs all
# ksteps: the last one's tail pairs read the zero slot). Its per-thread
# instruction counts come from SASS (CUDA_COUNTS); the plan from make_plan().
# ---------------------------------------------------------------------------
SMEM_PER_SM = 228 * 1024  # H100/H200: 227 KB per block opt-in + 1 KB reserved per block
SMEM_STATIC = 608  # ptxas -v: the StageTables
SMEM_WAVEFRONTS_PER_CLK = 1  # 32 banks x 4 B: one conflict-free warp access per clock per SM


def cuda_plan(L: Layer, bn: int, nhwc: bool) -> dict | None:
    """make_plan<BN>() for a 3x3 stride-1 layer, or None where the kernel
    declines it (NCHW needs the row width a multiple of 2, 4 or 8)."""
    piece = 8 if nhwc else next((pw for pw in (8, 4, 2) if L.hw % pw == 0), None)
    if piece is None:
        return None
    tw = 8 if L.hw <= 8 else 16
    halo_h, halo_w = 128 // tw + K - 1, tw + K - 1
    pieces = halo_w if nhwc else cdiv(halo_w + piece - 1, piece)
    row_pitch = halo_w * 8 if nhwc else pieces * piece
    slot_elems = pad(halo_h * row_pitch, 8)
    for kc in (16, 8, 4, 2, 1):  # the most kept channels per stage that fit 3 stages
        ksteps = cdiv(kc * K * K, 16)
        smem = 3 * ksteps * bn * 32 + 3 * pad((kc + 1) * slot_elems * 2, 16) + 5 * ksteps * 64 + 1024
        if smem <= 227 * 1024 - SMEM_STATIC:
            return dict(tw=tw, halo_h=halo_h, pieces=pieces, piece_bytes=2 * piece,
                        slot_bytes=2 * slot_elems, kc=kc, ksteps=ksteps, smem_bytes=smem)
    return None


def cuda_predict(counts: dict, L: Layer, n: int, s: float, nhwc: bool) -> dict | None:
    bn = min(n, 64)  # the widest of 64/32/16 dividing N (N here is 16/32/64)
    c, plan = counts["kernels"][str(bn)], cuda_plan(L, bn, nhwc)
    if plan is None:
        return None
    kc, ksteps = plan["kc"], plan["ksteps"]
    rows, kept = L.c // n, L.c * (1 - s)
    work = cdiv(L.hw, 128 // plan["tw"]) * cdiv(L.hw, plan["tw"]) * BATCH * rows * (n // bn)
    stages = math.ceil(kept / kc)
    # Slots per stage: NCHW one per kept channel; NHWC one per 8-channel chunk
    # that the stage's kc consecutive kept channels (spread over kc / density
    # channels at random positions) touch, which at 50% is about kc / 4 + 1.
    slots = kc if not nhwc else min(kc, kc / (8 * (1 - s)) + 1)
    a_pieces = slots * plan["halo_h"] * plan["pieces"]
    b_pieces = ksteps * 16 * bn // 8
    # Per thread per stage: the k loop, plus the stage's share of the fill
    # loops (the pieces spread over 256 threads).
    per_thread = (ksteps * c["per_k16_step_total"] + cdiv(ksteps, 4) * c["per_batch_fixed_total"]
                  + a_pieces / 256 * c["fill_instructions"]["a_piece"]
                  + b_pieces / 256 * c["fill_instructions"]["b_piece"])
    warp_instr = work * stages * 8 * per_thread
    # Shared-memory wavefronts per stage: 8 warps x ksteps x (8 gathered
    # elements + 2 offset loads), conflict-free (an upper bound: see
    # gpu_kernels.md), + wgmma's B reads + the cp.async writes, 128 B each.
    stage_bytes = a_pieces * plan["piece_bytes"] + b_pieces * 16
    wavefronts = work * stages * (8 * ksteps * (c["per_k16_step"]["smem_load"] + c["per_k16_step"]["smem_load_64"])
                                  + 2 * ksteps * bn * 32 / 128 + stage_bytes / 128)
    execd = work * 128 * bn * stages * ksteps * 16
    e = 2
    w_bytes = rows * kept * (n * K * K * e + 4)
    # Resident CTAs per SM (registers, shared memory); the grid is persistent,
    # so the last round of work items over them quantises.
    per_sm = max(1, min(65536 // (c["registers"] * 256), SMEM_PER_SM // (plan["smem_bytes"] + SMEM_STATIC + 1024)))
    waves = cdiv(work, SMS * per_sm) * SMS * per_sm / work
    clk = SMS * CLOCK_HZ
    terms = dict(
        compute_s=execd / (FLOPS[("wgmma", "bf16")] / 2) * waves,
        issue_s=warp_instr / (ISSUE_PER_CLK_SM * clk) * waves,
        smem_s=wavefronts / (SMEM_WAVEFRONTS_PER_CLK * clk) * waves,
        # every work item reads its stages' halo slots and B tiles from L2
        # (rows re-read the same halo: compulsory HBM once, L2 per row)
        l2_s=work * stages * stage_bytes / L2_BPS * waves,
        hbm_s=(2 * L.act_bytes(e) + w_bytes) / HBM_BPS,
    )
    bound = max(terms, key=terms.get)  # exact traffic here, so l2 and smem are in the bound
    return dict(terms, time_s=terms[bound], bound=bound[:-2], useful_macs=L.p * rows * kept * n * K * K,
                executed_macs=execd, programs=work, wave_factor=round(waves, 3), ctas_per_sm=per_sm,
                warp_instructions=warp_instr, smem_wavefronts=wavefronts,
                macs_per_warp_instruction=execd / warp_instr, plan=dict(plan, slots_per_stage=slots,
                                                                        stages=stages, bn=bn))


def cuda_rows(counts: dict) -> list[dict]:
    """bf16 rows of the CUDA forward: N 16/32/64 x sparsity x layer x layout;
    best_layout marks the faster layout of a case (what targets use)."""
    out = []
    for n in (16, 32, 64):
        for s in SPARSITIES:
            for c, hw in LAYERS:
                L, base = Layer(c, hw), cudnn(Layer(c, hw), "bf16")
                preds = {lay: cuda_predict(counts, L, n, s, lay == "NHWC") for lay in ("NCHW", "NHWC")}
                best = min((p["time_s"], lay) for lay, p in preds.items() if p)[1]
                for lay, p in preds.items():
                    p = p or dict(time_s=None, bound="unsupported (make_plan declines)")
                    out.append(dict(kind="block1xn", backend="cuda-sm90", **{"pass": "forward"},
                                    layer=L.name, dtype="bf16", n=n, sparsity=s, layout=lay,
                                    best_layout=lay == best, dot="wgmma", cudnn=base,
                                    speedup=p["time_s"] and base["time_s"] / p["time_s"], **p))
    return out


def cuda_table(result: dict) -> str:
    """Markdown: per N, sparsity and layout, each layer's speed-up and its
    terms in microseconds (compute / issue / smem / l2 / hbm)."""
    lines = ["| N | sparsity | layout | layer | speed-up | compute | issue | smem | l2 | hbm | bound "
             "| MAC / warp-instr |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if r["backend"] != "cuda-sm90":
            continue
        if r["time_s"] is None:
            lines.append(f"| {r['n']} | {r['sparsity']:g} | {r['layout']} | {r['layer']} | n/a "
                         "| | | | | | unsupported | |")
            continue
        us = " | ".join(f"{r[k] * 1e6:.1f}" for k in ("compute_s", "issue_s", "smem_s", "l2_s", "hbm_s"))
        lines.append(f"| {r['n']} | {r['sparsity']:g} | {r['layout']} | {r['layer']} | {r['speedup']:.2f}x "
                     f"| {us} | {r['bound']} | {r['macs_per_warp_instruction']:.0f} |")
    return "\n".join(lines)


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _speedup(rows, kind, passes, dtype, n, s, backend="triton") -> float | None:
    """Geomean over TARGET_LAYERS of cuDNN's time over the sparse time, the
    passes' times summed (grad-input + grad-weight against dgrad + wgrad)."""
    per_layer = []
    for c, hw in TARGET_LAYERS:
        sel = [r for r in rows if r["kind"] == kind and r["pass"] in passes and r["dtype"] == dtype
               and r["backend"] == backend and r["time_s"] is not None and r.get("best_layout", True)
               and r["n"] == n and abs(r["sparsity"] - s) < 1e-9 and r["layer"] == f"{c}@{hw}"]
        if len(sel) != len(passes):
            return None
        per_layer.append(sum(r["cudnn"]["time_s"] for r in sel) / sum(r["time_s"] for r in sel))
    return _geomean(per_layer)


# The issue's targets: bf16, batch 64, geomean over 128@28, 256@14, 512@7.
TARGETS = [
    ("1xN N=32 forward, 50%", ("forward",), "bf16", 32, 0.5, 1.6),
    ("1xN N=32 forward, 75%", ("forward",), "bf16", 32, 0.75, 2.8),
    ("1xN N=32 forward, 90%", ("forward",), "bf16", 32, 0.9, 4.5),
    ("1xN N=32 backward (grad-input + grad-weight), 75%", ("grad-input", "grad-weight"), "bf16", 32,
     0.75, 2.0),
    ("1xN N=4 fp32 (TF32 off) forward, 50%", ("forward",), "fp32", 4, 0.5, 1.6),
]


def targets(rows, backend="triton") -> list[dict]:
    out = []
    for name, passes, dtype, n, s, goal in TARGETS:
        got = _speedup(rows, "block1xn", passes, dtype, n, s, backend)
        out.append(dict(target=name, goal=goal, predicted=got,
                        met=None if got is None else got >= goal))
    return out


def _assumptions() -> dict:
    return dict(sms=SMS, clock_hz=CLOCK_HZ, issue_per_clk_sm=ISSUE_PER_CLK_SM, hbm_Bps=HBM_BPS,
                l2_Bps=L2_BPS, dense_flops={f"{d}/{t}": v for (d, t), v in FLOPS.items()},
                cudnn_efficiency=CUDNN_EFFICIENCY, cudnn_flops=CUDNN_FLOPS, batch=BATCH,
                pattern="4 of 9 taps, connectivity 0/0.5/0.75 of kernels dropped",
                kept_positions="uniformly random (no row imbalance)",
                instruction_count="PTX instructions of the main loop, one SASS each")


def table(result: dict, dtype: str = "bf16") -> str:
    """Markdown: predicted speed-up vs cuDNN per layer, binding term, config."""
    lines = [f"| kind | pass | N | sparsity | {' | '.join(f'{c}@{hw}' for c, hw in LAYERS)} "
             "| geomean (3 deep) | bound (256@14) | l2_s / time (256@14) |",
             "|---|---|---|---|" + "---|" * len(LAYERS) + "---|---|---|"]
    groups: dict = {}
    for r in result["rows"]:
        if r["dtype"] == dtype and r["backend"] == "triton":
            groups.setdefault((r["kind"], r["pass"], r["n"] or 0, r["sparsity"]), {})[r["layer"]] = r
    for (kind, pass_, n, s), by_layer in sorted(groups.items()):
        cells = [f"{by_layer[f'{c}@{hw}']['speedup']:.2f}x" for c, hw in LAYERS]
        geo = _geomean([by_layer[f"{c}@{hw}"]["speedup"] for c, hw in TARGET_LAYERS])
        mid = by_layer["256@14"]
        lines.append(f"| {kind} | {pass_} | {n or '-'} | {s:g} | {' | '.join(cells)} | {geo:.2f}x "
                     f"| {mid['bound']} ({mid['dot']}) | {mid['l2_s'] / mid['time_s']:.2f} |")
    return "\n".join(lines)


def targets_table(result: dict, key: str = "targets") -> str:
    lines = ["| target | goal | predicted (upper bound) | met |", "|---|---|---|---|"]
    for t in result[key]:
        got = "n/a" if t["predicted"] is None else f"{t['predicted']:.2f}x"
        met = {None: "n/a", True: "yes", False: "no"}[t["met"]]
        lines.append(f"| {t['target']} | >= {t['goal']}x | {got} | {met} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", default=REPORT, help="triton_sm90.py's JSON")
    ap.add_argument("--json", required=True, help="output")
    args = ap.parse_args(argv)
    with open(args.report) as f:
        result = model(json.load(f))
    with open(args.json, "w") as f:
        json.dump(result, f, indent=1)
    for dtype in ("bf16", "fp32"):
        print(f"\n{dtype}: predicted speed-up vs cuDNN (upper bound)\n" + table(result, dtype))
    print("\n" + targets_table(result))
    print("\nCUDA sm90 forward (bf16): predicted speed-up vs cuDNN and its terms\n" + cuda_table(result))
    print("\n" + targets_table(result, "cuda_sm90_targets"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
