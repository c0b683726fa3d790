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
def _block1xn(pass_, cfg, L: Layer, n: int, s: float, e: int):
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
    else:  # grad-weight: per row, [its kept (tap, block) pairs, P] x [P, BLOCK_N] in
        # BLOCK_M tiles, the pixels split so that ~1024 programs run (host rule), the
        # splits' fp32 partial sums written and summed by a second kernel
        bm, bp = cfg["BLOCK_M"], cfg["BLOCK_P"]
        m_tiles = cdiv(math.ceil(nnzb * K * K), 128) + rows
        splits = max(1, min(1024 // m_tiles, cdiv(L.p, 128), 256))
        split_p = pad(cdiv(L.p, splits), 128)
        splits = cdiv(L.p, split_p)
        execd = rows * pad(math.ceil(kept * K * K), bm) * bn * splits * pad(split_p, bp)
        programs = rows * cdiv(math.ceil(kept * K * K), bm) * splits
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
        useful, execd, programs, w_bytes = _block1xn(pass_, cfg, L, n, s, e)
    elif record["kind"] == "stripe":
        useful, execd, programs, w_bytes = _stripe(pass_, cfg, L, s, e)
    else:
        useful, execd, programs, w_bytes = _pattern(pass_, cfg, L, s, e)
    loop = record["loop"]
    waves = cdiv(programs, SMS) * SMS / programs  # last-wave quantisation
    iterations = execd / loop["dot_tile_macs"]
    threads = 32 * cfg["num_warps"]
    terms = dict(
        compute_s=execd / (FLOPS[(record["dot"], record["dtype"])] / 2) * waves,
        issue_s=execd / loop["macs_per_warp_instruction"] / (ISSUE_PER_CLK_SM * SMS * CLOCK_HZ) * waves,
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
              and r["launcher"] in ("_forward", "_grad_input", "_grad_weight")]
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
                cases.setdefault((r["kind"], r["pass"], r["dtype"], n, s, c, hw), []).append(r)
    for (kind, pass_, dtype, n, s, c, hw), recs in cases.items():
        L = Layer(c, hw)
        preds = [(predict(r, L, n, s), r) for r in recs]
        best, r = min(preds, key=lambda pr: pr[0]["time_s"])
        base = cudnn(L, dtype)
        sparsity = s if kind != "pattern" else 1 - (1 - s) * 4 / (K * K)
        rows.append(dict(kind=kind, **{"pass": pass_}, layer=L.name, dtype=dtype, n=n,
                         sparsity=round(sparsity, 3), config=r["config"], variant=r["variant"],
                         dot=r["dot"], registers=r["registers"], spill_bytes=r["spill_bytes"],
                         **best, cudnn=base, speedup=base["time_s"] / best["time_s"]))
    return dict(assumptions=_assumptions(), rows=rows, targets=targets(rows))


def _geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def _speedup(rows, kind, passes, dtype, n, s) -> float | None:
    """Geomean over TARGET_LAYERS of cuDNN's time over the sparse time, the
    passes' times summed (grad-input + grad-weight against dgrad + wgrad)."""
    per_layer = []
    for c, hw in TARGET_LAYERS:
        sel = [r for r in rows if r["kind"] == kind and r["pass"] in passes and r["dtype"] == dtype
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


def targets(rows) -> list[dict]:
    out = []
    for name, passes, dtype, n, s, goal in TARGETS:
        got = _speedup(rows, "block1xn", passes, dtype, n, s)
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
        if r["dtype"] == dtype:
            groups.setdefault((r["kind"], r["pass"], r["n"] or 0, r["sparsity"]), {})[r["layer"]] = r
    for (kind, pass_, n, s), by_layer in sorted(groups.items()):
        cells = [f"{by_layer[f'{c}@{hw}']['speedup']:.2f}x" for c, hw in LAYERS]
        geo = _geomean([by_layer[f"{c}@{hw}"]["speedup"] for c, hw in TARGET_LAYERS])
        mid = by_layer["256@14"]
        lines.append(f"| {kind} | {pass_} | {n or '-'} | {s:g} | {' | '.join(cells)} | {geo:.2f}x "
                     f"| {mid['bound']} ({mid['dot']}) | {mid['l2_s'] / mid['time_s']:.2f} |")
    return "\n".join(lines)


def targets_table(result: dict) -> str:
    lines = ["| target | goal | predicted (upper bound) | met |", "|---|---|---|---|"]
    for t in result["targets"]:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
