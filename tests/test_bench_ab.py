"""scripts/bench_ab.py's summary of two checkouts' alternated runs (no
benchmark is run: --summarize over records written here)."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bench_ab.py"
SIDE = {"git_commit": "abc", "device_name": "cpu", "cpu_simd": "avx2", "threads": 2,
        "torch_version": "2"}


@pytest.fixture
def bench_ab():
    spec = importlib.util.spec_from_file_location("bench_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _summarize(bench_ab, monkeypatch, out, base, head, command):
    out.mkdir()
    (out / "base.json").write_text(json.dumps(base))
    (out / "head.json").write_text(json.dumps(head))
    monkeypatch.setattr(sys, "argv", ["bench_ab.py", str(out), str(out), "--summarize", "--",
                                      *command])
    bench_ab.main()
    return json.loads((out / "summary.json").read_text())


def _network(kind, sparsity, ms, engine="pytorch", ok=True):
    return {**SIDE, "record_type": "network", "ok": ok, "arch": "net", "batch": 8,
            "engine": engine, "mode": "eager", "kind": kind, "n": 16 if kind else None,
            "sparsity": sparsity, "dtype": "float32", "latency_ms": ms}


def test_networks_rows_are_records_with_the_median_over_rounds(bench_ab, monkeypatch,
                                                               tmp_path):
    base = [_network(None, 0.0, 10.0), _network(None, 0.0, 8.0, "onnxruntime"),
            _network("1xN", 0.5, 6.0), _network("1xN", 0.5, 8.0), _network("1xN", 0.5, 7.0),
            _network("1xN", 0.9, 4.0), _network("1xN", 0.9, 99.0, ok=False)]
    head = [_network(None, 0.0, 11.0), _network(None, 0.0, 8.8, "onnxruntime"),
            _network("1xN", 0.5, 3.5), _network("1xN", 0.9, 3.0)]
    s = _summarize(bench_ab, monkeypatch, tmp_path / "out", base, head,
                   ["networks", "--arch", "net"])
    assert s["command"] == "networks" and s["bench_args"] == ["--arch", "net"]
    rows = {(r["engine"], r["sparsity"]): r for r in s["rows"]}
    assert len(rows) == 4
    assert rows["pytorch", 0.5]["base_ms"] == 7.0  # the median of three rounds
    assert rows["pytorch", 0.5]["ratio"] == pytest.approx(0.5)
    assert rows["pytorch", 0.9]["base_ms"] == 4.0  # the failed record left out
    assert s["sparse_ratio_geomean"] == pytest.approx(math.sqrt(0.5 * 0.75))
    assert s["dense_ratio_geomean"] == pytest.approx(1.1)
    assert s["sides"]["base"] == SIDE


def test_layers_rows_pair_the_sparse_and_dense_times(bench_ab, monkeypatch, tmp_path):
    def layer(sparse, dense):
        return {**SIDE, "record_type": "layer", "ok": True, "layer": "1x1_64-64@56",
                "pass": "forward", "kind": "1xN", "n": 16, "sparsity": 0.5, "backend": "cpu",
                "memory_format": "nchw", "dtype": "float32", "batch": 8,
                "sparse_ms": sparse, "dense_ms": dense}
    s = _summarize(bench_ab, monkeypatch, tmp_path / "out", [layer(2.0, 4.0)],
                   [layer(1.5, 4.4)], ["--suite", "resnet50"])
    assert s["command"] == "layers"
    (row,) = s["rows"]
    assert row["sparse_ratio"] == pytest.approx(0.75) and row["dense_ratio"] == pytest.approx(1.1)
    assert s["sparse_ratio_geomean"] == pytest.approx(0.75)
