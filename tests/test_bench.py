"""The microbenchmark CLI, run in-process on tiny layers (no timing asserted)."""
import json
import math

import pytest
import torch

from sparsekernels.bench import main, measure
from sparsekernels.testing import backends_here

FAST = ["--quick", "--device", "cpu", "--repeat", "1", "--warmup", "0"]
FIELDS = (
    "kind", "layer", "cin", "cout", "kh", "kw", "stride", "hw", "batch", "n", "sparsity",
    "dtype", "device", "backend", "dense_ms", "sparse_ms", "speedup", "max_rel_err",
    "dense_nchw_ms", "dense_channels_last_ms", "ok", "tf32", "threads", "torch_version",
    "cpu_simd", "timestamp", "command",
)


def run(tmp_path, *extra) -> tuple[int, list[dict]]:
    path = tmp_path / "bench.json"
    rc = main([*FAST, *extra, "--json", str(path)])
    return rc, json.loads(path.read_text())


def check_records(records, backend, passes="forward"):
    assert records
    for r in records:
        assert set(FIELDS) <= set(r), set(FIELDS) - set(r)
        assert r["ok"] is True and r["error"] is None
        assert r["backend"] == backend and r["passes"] == passes and r["device"] == "cpu"
        assert r["speedup"] == r["dense_ms"] / r["sparse_ms"]
        assert r["dense_ms"] == min(r["dense_nchw_ms"], r["dense_channels_last_ms"])
        assert 0 <= r["max_rel_err"] <= 1e-4


@pytest.mark.parametrize("backend", backends_here("cpu"))
def test_forward_records(tmp_path, backend):
    # The Triton interpreter is slow: one layer, one sparsity.
    extra = ["--layers", "1x1*", "--sparsity", "0.75"] if backend == "triton" else []
    rc, records = run(tmp_path, "--backend", backend, *extra)
    assert rc == 0
    check_records(records, backend)
    expected = 1 if backend == "triton" else 3 * 3  # layers x sparsities
    assert len(records) == expected


def test_backward_pass(tmp_path):
    backend = "cpu" if "cpu" in backends_here("cpu") else "reference"
    rc, records = run(tmp_path, "--backend", backend, "--passes", "backward",
                      "--layers", "3x3s2*", "--n", "4", "16", "--sparsity", "0.5")
    assert rc == 0
    check_records(records, backend, "forward+backward")
    assert sorted(r["n"] for r in records) == [4, 16]


def test_flags_inaccurate_and_failing_configs(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(measure.TOLERANCE, torch.float32, -1.0)  # every error is too big
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity", "0.5")
    assert rc == 1 and [r["ok"] for r in records] == [False]
    assert "FAIL" in capsys.readouterr().out

    def broken(*args):
        raise RuntimeError("unsupported shape")

    monkeypatch.setitem(measure.KINDS, "1xN", measure.KINDS["1xN"]._replace(conv=broken))
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity", "0.5")
    (r,) = records
    assert rc == 1 and r["ok"] is False and "unsupported shape" in r["error"]
    assert r["sparse_ms"] is None and r["speedup"] is None and math.isfinite(r["dense_ms"])


def test_rejects_unknown_layers():
    with pytest.raises(SystemExit):
        main([*FAST, "--layers", "no-such-layer"])
