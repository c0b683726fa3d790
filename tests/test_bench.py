"""The layer benchmark (``python -m sparsekernels.bench [layers]``), run in-process
on tiny layers: records, sweeps, the correctness gate, argument checks (no
timing is asserted)."""
import json
import math

import pytest

from sparsekernels.bench import kinds, main, schema
from sparsekernels.testing import backends_here

FAST = ["--quick", "--device", "cpu", "--repeat", "1", "--warmup", "0", "--rotate", "2"]


def run(tmp_path, *extra, command=()) -> tuple[int, list[dict]]:
    path = tmp_path / "bench.json"
    rc = main([*command, *FAST, *extra, "--json", str(path)])
    return rc, schema.load(str(path))  # load() validates every record


def check_records(records, backend, pass_="forward"):
    assert records
    for r in records:
        assert r["ok"] is True and r["error"] is None, r["error"]
        assert r["record_type"] == "layer" and r["schema_version"] == schema.SCHEMA_VERSION
        assert r["backend"] == backend and r["pass"] == pass_ and r["device"] == "cpu"
        assert r["speedup"] == r["dense_ms"] / r["sparse_ms"]
        assert r["dense_ms"] == min(r["dense_nchw_ms"], r["dense_channels_last_ms"])
        assert r["ideal_fraction"] == r["speedup"] / r["ideal_speedup"]
        assert r["sparse_tflops"] == r["useful_flop"] / (r["sparse_ms"] * 1e9)
        assert r["useful_flop"] == pytest.approx(r["flop"] * (1 - r["actual_sparsity"]))
        assert 0 <= r["max_rel_err"] <= r["tol"]
        assert r["rotation_sets"] == 2 and r["peak_tflops"] > 0 and r["bandwidth_gbs"] > 0


@pytest.mark.parametrize("backend", backends_here("cpu"))
def test_forward_records(tmp_path, backend):
    # The Triton interpreter is slow: one layer, one sparsity.
    extra = ["--layers", "1x1*", "--sparsity", "0.75"] if backend == "triton" else []
    rc, records = run(tmp_path, "--backend", backend, *extra)
    assert rc == 0
    check_records(records, backend)
    per_kind = 1 if backend == "triton" else 3 * 3  # layers x sparsities
    assert len(records) == per_kind * len(kinds.KINDS)
    assert sorted({r["kind"] for r in records}) == sorted(kinds.KINDS)  # every kind by default
    assert all(r["n"] == (16 if r["kind"] == "1xN" else None) for r in records)
    assert records[0]["suite"] == "quick"
    assert records[0]["command"].startswith("python -m sparsekernels.bench layers --quick")


def test_backward_passes(tmp_path):
    # 'backward' is the first version's name for 'all': asked twice, run once.
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "3x3s2*", "--n", "4", "16",
                      "--sparsity", "0.5", "--passes", "grad-input", "grad-weight", "all",
                      "backward", "--kind", "1xN", command=["layers"])
    assert rc == 0
    for pass_ in ("grad-input", "grad-weight", "all"):
        mine = [r for r in records if r["pass"] == pass_]
        check_records(mine, "reference", pass_)
        assert sorted(r["n"] for r in mine) == [4, 16]
    flops = {r["pass"]: r["flop"] for r in records}
    assert flops["all"] == 3 * flops["grad-input"] == 3 * flops["grad-weight"]


def test_sweeps_dtype_batch_memory_format(tmp_path):
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity", "0.5",
                      "--dtype", "float32", "float64", "--batch", "1", "2",
                      "--memory-format", "nchw", "channels_last", "--kind", "stripe")
    assert rc == 0
    seen = {(r["dtype"], r["batch"], r["memory_format"]) for r in records}
    assert len(records) == len(seen) == 8
    assert all(r["ok"] for r in records)


def test_custom_shapes_append_and_device_placeholder(tmp_path):
    path = tmp_path / "{device}" / "custom.json"
    args = [*FAST, "--backend", "reference", "--sparsity", "0.5", "--kind", "1xN",
            "--json", str(path)]
    assert main([*args, "--shape", "8,16,3,2,7", "8,16,3,2,7"]) == 0  # a repeat runs once
    assert main([*args, "--shape", "16,32,1,1,5"]) == 0  # appends to the same file
    (written,) = tmp_path.glob("cpu-*/custom.json")
    records = schema.load(str(written))
    assert [r["layer"] for r in records] == ["3x3s2_8-16@7", "1x1_16-32@5"]
    assert {r["suite"] for r in records} == {"custom"}
    assert records[0]["run_id"] != records[1]["run_id"]


def test_correctness_gate_never_times_a_wrong_kernel(tmp_path, monkeypatch, capsys):
    calls = []
    good = kinds.KINDS["1xN"]

    class Wrong(kinds.Kind):
        def conv(self, x, fmt, layer, backend):
            calls.append(1)
            return good.conv(x, fmt, layer, backend) * 1.01

    class Raising(kinds.Kind):
        def conv(self, *args):
            raise RuntimeError("unsupported shape")

    monkeypatch.setitem(kinds.KINDS, "wrong", Wrong(*good))
    monkeypatch.setitem(kinds.KINDS, "raising", Raising(*good))
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity", "0.5",
                      "--kind", "1xN", "wrong", "raising")
    assert rc == 1 and "FAIL" in capsys.readouterr().out
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["1xN"]["ok"] and by_kind["1xN"]["speedup"] > 0
    for name, message in (("wrong", "wrong result: max relative error 1.00e-02"),
                          ("raising", "RuntimeError: unsupported shape")):
        r = by_kind[name]
        assert r["ok"] is False and r["error"].startswith(message)
        assert r["sparse_ms"] is None and r["speedup"] is None and math.isfinite(r["dense_ms"])
    assert len(calls) == 1  # the check ran it; the timing never did


def test_every_registered_kind_runs_by_default(tmp_path, monkeypatch):
    monkeypatch.setitem(kinds.KINDS, "copy", kinds.KINDS["1xN"])
    rc, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity", "0.5")
    assert rc == 0 and sorted(r["kind"] for r in records) == sorted(kinds.KINDS)  # copy included


def test_pad_partial_times_the_padded_block(tmp_path):
    rc, records = run(tmp_path, "--backend", "reference", "--shape", "8,24,3,1,6", "--n", "16",
                      "--sparsity", "0.5", "--pad-partial", "--kind", "1xN")
    (r,) = records
    assert rc == 0 and r["ok"] and 0 < r["actual_sparsity"] < 1


@pytest.mark.parametrize("args, message", [
    (["--kind", "2:4"], "invalid choice: '2:4'"),
    (["--sparsity", "1.0"], "expected a sparsity in [0, 1), got 1.0"),
    (["--sparsity", "-0.1"], "expected a sparsity in [0, 1), got -0.1"),
    (["--n", "0"], "expected an int >= 1"),
    (["--shape", "8,24,3,1,6", "--n", "16"],
     "3x3_8-24@6: N=16 does not divide out_channels=24"),
    (["--suite", "quick", "--shape", "8,16,3,1,6"], "give --suite or --shape, not both"),
    (["--shape", "8,16,3"], "expected cin,cout,k,stride,hw"),
    (["--shape", "8,16,3,0,6"], "stride must be >= 1"),
    (["--layers", "no-such-layer"], "match no layer of 'quick'"),
])
def test_cli_rejects_bad_arguments(args, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*FAST, *args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_refuses_to_append_to_another_schema(tmp_path, capsys):
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"kind": "1xN", "speedup": 1.2}]))  # a version-1 record
    with pytest.raises(SystemExit):
        main([*FAST, "--json", str(path)])
    assert "schema_version is None; this tool reads" in capsys.readouterr().err



def test_pattern_sweeps_library_and_connectivity(tmp_path):
    rc, records = run(tmp_path, "--backend", "reference", "--kind", "pattern", "--shape",
                      "8,16,3,1,6", "--patterns", "4", "8", "--entries", "4",
                      "--connectivity", "0", "0.5")
    assert rc == 0 and len(records) == 4
    for r in records:
        assert r["ok"] and r["n"] is None and r["entries"] == 4
        # 4 of 9 kept, then the connectivity fraction of kernels dropped
        assert r["sparsity"] == pytest.approx(1 - (1 - r["connectivity"]) * 4 / 9)
        assert r["actual_sparsity"] == pytest.approx(r["sparsity"], abs=0.01)
    assert {(r["patterns"], r["connectivity"]) for r in records} == {
        (p, c) for p in (4, 8) for c in (0.0, 0.5)}
    assert schema.kind_label(records[0]) == "pattern 4x4"


def test_version_2_records_read_as_the_current_version(tmp_path):
    path = tmp_path / "v2.json"
    _, records = run(tmp_path, "--backend", "reference", "--layers", "1x1*", "--sparsity",
                     "0.5", "--kind", "stripe")
    for r in records:
        for field in ("patterns", "entries", "connectivity"):
            del r[field]
        r["schema_version"] = 2
    path.write_text(json.dumps(records))
    back = schema.load(str(path))
    assert all(r["schema_version"] == schema.SCHEMA_VERSION and r["connectivity"] is None
               for r in back)
