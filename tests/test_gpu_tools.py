"""The GPU tools that run without a GPU: the sm_90 compile report
(benchmarks/triton_sm90.py) and the performance model (benchmarks/gpu_model.py).

The compile report imports Triton with the interpreter off, which this test
process cannot (conftest turns it on before triton is imported), so its
checks run in a subprocess."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import gpu_design_model  # noqa: E402
import gpu_model  # noqa: E402  (pure arithmetic: no triton)

COMMITTED = os.path.join(ROOT, "benchmarks", "results", "gpu-sm90", "triton_sm90.json")
REGENERATE = "python benchmarks/triton_sm90.py --json benchmarks/results/gpu-sm90/triton_sm90.json"


def _run(code: str) -> dict:
    """``code`` in a fresh interpreter with Triton's interpreter off; it
    prints one JSON value, returned."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    prelude = "import sys, json; sys.path.insert(0, 'benchmarks'); import triton_sm90 as t\n"
    r = subprocess.run([sys.executable, "-c", prelude + code], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def enumeration():
    """The jobs, and what the kinds' modules hold, found another way: every
    module-level ``_Launcher`` object, and every ``X = _Launcher(...)`` in
    their source."""
    return _run("""
import ast, importlib, inspect, torch
from sparsekernels.kinds import KINDS
from sparsekernels.triton.common import _Launcher
live, written = {}, []
for slug in KINDS:
    m = importlib.import_module(f"sparsekernels.triton.{slug}")
    for name, obj in vars(m).items():
        if isinstance(obj, _Launcher):
            # per dtype and config: the N the launcher keeps it for (its fits rule)
            kept_for = {}
            for dt in t.DTYPES:
                cfgs = obj.configs_for(getattr(torch, t.DTYPES[dt]))
                kept_for[dt] = [[n for n in list(t.NS) + [4]
                                 if c in obj.configs_for(getattr(torch, t.DTYPES[dt]), N=n)] for c in cfgs]
            live[f"{slug}.{name}"] = dict(takes_n="N" in obj.kernel.arg_names, kept_for=kept_for, configs={
                dt: len(obj.configs_for(getattr(torch, t.DTYPES[dt]))) for dt in t.DTYPES})
    for node in ast.parse(inspect.getsource(m)).body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \\
                and getattr(node.value.func, "id", "") == "_Launcher":
            written += [f"{slug}.{tgt.id}" for tgt in node.targets]
jobs = t.jobs()
print(json.dumps(dict(jobs=jobs, keys=[t.job_key(j) for j in jobs], live=live, written=written,
                      dtypes=list(t.DTYPES), ns=list(t.NS), n4=list(t.N4_DTYPES))))
""")


def test_enumeration_covers_every_launcher_and_config(enumeration):
    e = enumeration
    assert e["live"], "no launcher found"
    assert sorted(e["written"]) == sorted(e["live"])
    for kernel, info in e["live"].items():
        mine = [j for j in e["jobs"] if j["kernel"] == kernel]
        for dt in e["dtypes"]:
            for ci in range(info["configs"][dt]):
                got = {j["n"] for j in mine if j["config_index"] == ci and j["dtype"] == dt}
                ns = (set(e["ns"]) | ({4} if dt in e["n4"] else set())) & set(info["kept_for"][dt][ci])
                assert got == (ns if info["takes_n"] else {None}), (kernel, ci, dt, got)
    assert len(set(map(tuple, e["keys"]))) == len(e["keys"]), "duplicate jobs"


def test_committed_report_matches_the_kernels(enumeration):
    """Regenerate the report whenever a kernel, its configs or its helpers change."""
    with open(COMMITTED) as f:
        records = json.load(f)
    committed = {tuple(t_key(r)): r["source_hash"] for r in records}
    current = {tuple(k): j["source_hash"] for k, j in zip(enumeration["keys"], enumeration["jobs"])}
    missing = sorted(set(current) - set(committed))
    stale = sorted(k for k in committed if k not in current or committed[k] != current[k])
    assert not missing and not stale, (
        f"{COMMITTED} is out of date ({len(missing)} compiles missing, {len(stale)} stale, e.g. "
        f"{(missing + stale)[:2]}): regenerate it with\n    {REGENERATE}")


def test_every_fp16_bf16_dot_lowers_to_wgmma_without_spills():
    """Issue 13's bar on the committed report (kept current by the test
    above): every fp16/bf16 config of a kernel with a dot lowers it to wgmma
    on sm_90 and spills nothing. The exact (NaN/Inf) variants and the
    split-sum pass have no dot (``dot`` "fma") and are not held to it."""
    with open(COMMITTED) as f:
        records = [r for r in json.load(f) if r["dtype"] in ("fp16", "bf16")]
    dots = [r for r in records if not r["kernel"].endswith(("_exact", "_sum_splits"))]
    assert dots
    bad = [(r["kernel"], r["dtype"], r["variant"], r["config"], r["dot"], r["spill_bytes"])
           for r in dots if r["dot"] != "wgmma" or r["spill_bytes"]]
    assert not bad, bad


def t_key(r: dict) -> list:
    """triton_sm90.job_key, without importing triton here."""
    return [r["kernel"], r["dtype"], json.dumps(r["variant"], sort_keys=True),
            json.dumps(r["config"], sort_keys=True)]


def test_one_real_compile_has_the_schema():
    out = _run("""
import os
from triton.backends.nvidia.compiler import get_ptxas
try:
    ok = os.access(get_ptxas(90).path, os.X_OK)
except Exception:
    ok = False
if not ok:
    print(json.dumps(None)); raise SystemExit
job = min((j for j in t.jobs(dtypes=("fp16",)) if j["kernel"] == "stripe._forward"),
          key=lambda j: j["config"]["BLOCK_O"] * j["config"]["BLOCK_P"])
print(json.dumps(t.compile_job(job)))
""")
    if out is None:
        pytest.skip("Triton's CUDA backend has no ptxas here")
    assert "error" not in out, out["error"]
    for field in ("kernel", "kind", "pass", "dtype", "config", "dot", "registers", "spill_bytes",
                  "shared_bytes", "global_load_widths", "cp_async", "tma", "ptx_instructions"):
        assert field in out, field
    assert out["dot"] in ("wgmma", "mma.sync", "fma")
    assert {"num_warps", "num_stages", "BLOCK_O"} <= set(out["config"])
    # BLOCK_O x BLOCK_P x BLOCK_K per iteration of the K loop, issued as MMAs at least once
    cfg, loop = out["config"], out["loop"]
    assert loop["dot_tile_macs"] == cfg["BLOCK_O"] * cfg["BLOCK_P"] * cfg["BLOCK_K"]
    assert loop["issued_macs"] >= loop["dot_tile_macs"] and loop["ptx_instructions"] > 0


def test_model_arithmetic_on_a_dense_layer():
    layer = gpu_model.Layer(256, 14)
    assert layer.p == 64 * 14 * 14
    assert layer.dense_macs == 64 * 14 * 14 * 256 * 256 * 9  # 14.80 GFLOP (perf_anchors 3.3)
    assert abs(2 * layer.dense_macs / 1e9 - 14.80) < 0.01
    base = gpu_model.cudnn(layer, "bf16")
    flops = 788e12 * 0.75
    assert base["compute_s"] == pytest.approx(2 * layer.dense_macs / flops)
    # x and y (64x256x14x14 bf16 each) plus the 256x256x3x3 weights, at 4.3 TB/s
    assert base["hbm_s"] == pytest.approx((2 * 64 * 256 * 196 * 2 + 256 * 256 * 9 * 2) / 4.3e12)
    assert base["bound"] == "compute"


def test_model_terms_of_one_config():
    """A 1xN forward config at 0% sparsity executes the dense MACs (N=16,
    tiles that divide), and each term is its count over its rate."""
    record = dict(kind="block1xn", **{"pass": "forward"}, dtype="bf16", dot="wgmma", n=16,
                  config=dict(BLOCK_M=128, BLOCK_K=32, ROWS=1, num_warps=4, num_stages=3),
                  loop=dict(dot_tile_macs=128 * 32 * 16, macs_per_warp_instruction=10.0,
                            load_bytes_per_thread=64))
    layer = gpu_model.Layer(128, 28)
    p = gpu_model.predict(record, layer, 16, 0.0)
    assert p["executed_macs"] == p["useful_macs"] == layer.dense_macs
    assert p["programs"] == (64 * 28 * 28 // 128) * (128 // 16)
    waves = -(-p["programs"] // 132) * 132 / p["programs"]  # the last wave's quantisation
    assert p["compute_s"] == pytest.approx(layer.dense_macs / (788e12 / 2) * waves)
    assert p["issue_s"] == pytest.approx(layer.dense_macs / 10.0 / (4 * 132 * 1.98e9) * waves)
    assert p["time_s"] == max(p[k] for k in ("compute_s", "issue_s", "hbm_s"))  # l2_s: reported


def test_model_json_has_the_fields(tmp_path):
    out = tmp_path / "model.json"
    assert gpu_model.main(["--report", COMMITTED, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {"assumptions", "rows", "targets"} <= set(result)
    kinds = {r["kind"] for r in result["rows"]}
    assert kinds == {"block1xn", "stripe", "pattern"}
    for r in (r for r in result["rows"] if r["backend"] == "triton"):
        for field in ("compute_s", "issue_s", "hbm_s", "l2_s", "time_s", "bound", "speedup",
                      "useful_macs", "executed_macs", "config", "dot", "cudnn"):
            assert field in r, field
        assert r["time_s"] == max(r["compute_s"], r["issue_s"], r["hbm_s"])
    assert len(result["targets"]) == len(gpu_model.TARGETS)


def test_model_cuda_sm90_rows(tmp_path):
    """The CUDA Hopper forward's rows (from the committed SASS counts, no
    nvcc): bf16, N 16/32/64 x 3 sparsities x 4 layers x 2 layouts, each with
    its five terms, the largest of which is its time; targets computed."""
    with open(gpu_model.CUDA_COUNTS) as f:
        counts = json.load(f)
    for bn in ("16", "32", "64"):
        k = counts["kernels"][bn]
        assert k["per_k16_step"]["wgmma"] == 1 and k["per_k16_step"]["smem_load"] == 8, k
    out = tmp_path / "model.json"
    assert gpu_model.main(["--report", COMMITTED, "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    rows = [r for r in result["rows"] if r["backend"] == "cuda-sm90"]
    assert len(rows) == 3 * 3 * 4 * 2
    assert {(r["n"], r["layout"]) for r in rows} == {(n, l) for n in (16, 32, 64) for l in ("NCHW", "NHWC")}
    terms = ("compute_s", "issue_s", "smem_s", "l2_s", "hbm_s")
    for r in rows:
        assert r["pass"] == "forward" and r["dtype"] == "bf16" and r["kind"] == "block1xn"
        if r["time_s"] is None:  # make_plan declines NCHW rows of width 7
            assert r["layout"] == "NCHW" and r["layer"] == "512@7"
            continue
        assert r["time_s"] == max(r[t] for t in terms) and r["bound"] + "_s" in terms
        assert r["speedup"] == pytest.approx(r["cudnn"]["time_s"] / r["time_s"])
        assert r["executed_macs"] >= r["useful_macs"] > 0
    assert sum(r["best_layout"] for r in rows) == 3 * 3 * 4
    assert [t["target"] for t in result["cuda_sm90_targets"]] == [t[0] for t in gpu_model.TARGETS]
    assert all(t["predicted"] is not None for t in result["cuda_sm90_targets"][:3])


# ---------------------------------------------------------------------------
# The design gate: gpu_loop_probe.cu's loops, counted (cuda_sm90_counts.py
# --probe), and gpu_design_model.py built on those counts.
# ---------------------------------------------------------------------------
PROBE_LOOPS = {  # per loop iteration, as the probe's source lays them out
    "forward_ldsm": dict(ldsm=36, wgmma=36),         # 9 k16 steps x 4 m64 tiles
    "grad_weight_shift": dict(ldsm=8, wgmma=72),     # 8 k16 steps x 9 taps
    "grad_input_group": dict(ldsm=18, wgmma=288),    # 9 taps x (2 LDSM; 16 groups x 2 k16 steps)
    "forward_fp32_window": dict(ffma=288),           # 3 kernel rows x 3 taps x 8 pixels x 4 lanes
}


def _committed_probes() -> dict:
    with open(gpu_model.CUDA_COUNTS) as f:
        return json.load(f)["probes"]


def test_committed_probe_counts_are_the_designed_loops():
    """Each probe's main loop issues exactly the loads and MMAs its design
    has (no more: ptxas split or serialised nothing), without spills."""
    probes = _committed_probes()
    assert set(probes) == set(PROBE_LOOPS)
    for name, want in PROBE_LOOPS.items():
        p = probes[name]
        assert {k: p["loop_by_class"].get(k, 0) for k in want} == want, (name, p["loop_by_class"])
        assert p["spill_bytes"] == p["stack_bytes"] == 0 and not p["serialised_wgmma"], p
        assert p["loop_instructions"] == sum(p["loop_by_class"].values())


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not found")
def test_probe_counts_match_the_probe_source(tmp_path):
    """The committed probe counts are those of the probe as it is now
    (rerun: python benchmarks/cuda_sm90_counts.py --probe --json
    benchmarks/results/gpu-sm90/cuda_sm90_counts.json)."""
    import cuda_sm90_counts
    out = tmp_path / "counts.json"
    assert cuda_sm90_counts.main(["--probe", "--json", str(out)]) == 0
    fresh = json.loads(out.read_text())["probes"]
    drop = ("function",)
    assert ({k: {f: v for f, v in p.items() if f not in drop} for k, p in fresh.items()}
            == {k: {f: v for f, v in p.items() if f not in drop} for k, p in _committed_probes().items()})


def test_union_efficiency():
    """Grad-input's channel grouping: exact with nothing pruned, and the
    greedy grouping beats taking channels in order."""
    assert gpu_design_model.union_efficiency(256, 0.0) == 1.0
    import random
    c, s = 256, 0.75
    rng = random.Random(0)
    keep = [frozenset(r for r in range(c // 32) if rng.random() >= s) for _ in range(c)]
    in_order = sum(map(len, keep)) / sum(8 * len(frozenset().union(*keep[i:i + 8])) for i in range(0, c, 8))
    greedy = gpu_design_model.union_efficiency(c, s)
    assert in_order < greedy < 1.0


def test_design_model(tmp_path):
    """Every row's time is the largest of its terms, the work it executes is
    at least the useful work, and every target is predicted."""
    out = tmp_path / "design.json"
    assert gpu_design_model.main(["--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("rows", "rows_fixed_clk"):
        rows = result[key]
        assert len(rows) == 3 * 3 * 4 + 3 * 4  # bf16 passes x sparsities x layers + fp32 N=4 forward
        terms = ("compute_s", "issue_s", "smem_s", "l2_s", "hbm_s")
        for r in rows:
            assert r["time_s"] == max(r[t] for t in terms) > 0 and r["bound"] + "_s" in terms
            assert r["executed_macs"] >= r["useful_macs"] * (1 - 1e-9) > 0, r
            assert r["speedup"] == pytest.approx(r["cudnn"]["time_s"] / r["time_s"])
    case = lambda r: (r["pass"], r["layer"], r["sparsity"], r["dtype"])  # noqa: E731
    fixed = {case(r): r["time_s"] for r in result["rows_fixed_clk"]}
    assert all(fixed[case(r)] >= r["time_s"] for r in result["rows"])  # a fixed cost only adds time
    for key in ("targets", "targets_fixed_clk"):
        assert [t["target"] for t in result[key]] == [t[0] for t in gpu_model.TARGETS]
        assert all(t["predicted"] is not None for t in result[key])
    committed = os.path.join(ROOT, "benchmarks", "results", "gpu-sm90", "gpu_design_model.json")
    with open(committed) as f:  # the notes quote this file: it must be the model's output now
        assert json.load(f)["targets"] == result["targets"]
