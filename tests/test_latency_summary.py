"""What the pruning bought: the latency ``prune`` and ``export`` measure and
summarise, ``networks --model`` on an exported file, and the ONNX Runtime
dense baseline. The timer is replaced where figures are compared, so the
printed and saved figures are shown to be the measured ones; no speed is
asserted."""
import json
import shutil
import sys

import pytest
import torch

from sparsekernels.bench import latency, main as bench_main, schema
from sparsekernels.cli import main
from sparsekernels.models import MODELS, get_model

TINY = ["--pretrain_epochs", "1", "--num_epochs", "1", "--no-progress"]
EVAL_BATCH = 100
# Per call of the timer (batch 1, then the eval batch): ms of the dense and the sparse model.
FAKE_MS = [{"dense": 1.5, "sparse": 3.0}, {"dense": 40.0, "sparse": 10.0}]
NETWORK = ["networks", "--batch", "1", "--repeat", "1", "--warmup", "0", "--rotate", "2"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A tiny 1x4 digits job and its exported sparse.pt (read-only: copy it)."""
    job = tmp_path_factory.mktemp("latency") / "job"
    assert main(["prune", *TINY, "--job_dir", str(job), "--eval_batch_size", str(EVAL_BATCH),
                 "--no-latency"]) == 0
    assert main(["export", str(job / "pruned.pt"), "--no-latency"]) == 0
    return job


@pytest.fixture
def job(finished, tmp_path):
    copy = tmp_path / "job"
    shutil.copytree(finished, copy)
    return copy


@pytest.fixture
def fake_timer(monkeypatch):
    """``latency``'s timer answering FAKE_MS in turn; records the batches it saw."""
    seen = []

    def median_ms(steps, device, warmup, repeat):
        assert set(steps) == {"dense", "sparse"} and warmup >= 1 and repeat >= 1
        seen.append(steps)
        return FAKE_MS[len(seen) - 1]

    monkeypatch.setattr(latency, "median_ms", median_ms)
    return seen


def table_rows(out: str) -> list[list[str]]:
    """The latency table's rows (batch, dense ms, sparse ms, speed-up) as printed."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["batch", "dense"])
    return [line.split() for line in lines[start + 1:start + 3]]


def expected_rows() -> list[list[str]]:
    return [[str(batch), f"{ms['dense']:.3f}", f"{ms['sparse']:.3f}",
             f"{ms['dense'] / ms['sparse']:.2f}x"] for batch, ms in zip((1, EVAL_BATCH), FAKE_MS)]


def check_latency_record(record: dict) -> None:
    assert record["threads"] == torch.get_num_threads() and record["device"] == "cpu"
    assert record["batches"] == [
        {"batch": batch, "dense_ms": ms["dense"], "sparse_ms": ms["sparse"],
         "speedup": ms["dense"] / ms["sparse"]} for batch, ms in zip((1, EVAL_BATCH), FAKE_MS)]


def test_prune_summary_and_result_carry_the_measured_latency(job, fake_timer, capsys):
    capsys.readouterr()
    assert main(["prune", *TINY, "--job_dir", str(job), "--eval_batch_size", str(EVAL_BATCH)]) == 0
    out = capsys.readouterr().out
    assert table_rows(out) == expected_rows()
    assert len(fake_timer) == 2  # batch 1 and the evaluation batch, one interleaved run each
    result = json.loads((job / "result.json").read_text())
    check_latency_record(result["exported"]["latency"])
    exported = result["exported"]
    assert f"reduction {exported['flop_reduction']:.2f}x" in out
    assert exported["sparsity_by_kind"]["1xN"] == {"layers": 2, "weights": 55296,
                                                   "sparsity": 0.5}
    assert "1xN 50.0% of 2 layers" in out
    assert f"pruned {100 * result['test']['top1']:.2f}%" in out


def test_export_summary_and_record_carry_the_measured_latency(job, fake_timer, capsys):
    capsys.readouterr()
    assert main(["export", str(job / "pruned.pt"), "--out", str(job / "again.pt")]) == 0
    assert table_rows(capsys.readouterr().out) == expected_rows()
    fake_timer.clear()
    assert main(["export", str(job / "pruned.pt"), "--out", str(job / "again.pt"), "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    check_latency_record(record["latency"])
    assert record["flop_reduction"] == record["flops_dense"] / record["flops"] > 1


def test_json_and_no_latency(job, capsys):
    capsys.readouterr()
    assert main(["prune", *TINY, "--job_dir", str(job), "--json", "--no-latency"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert "exported" not in result and result["test"]["top1"] > 0
    assert main(["export", str(job / "pruned.pt"), "--no-latency"]) == 0
    out = capsys.readouterr().out
    assert "latency: not measured (--no-latency)" in out and not out.lstrip().startswith("{")
    assert main(["evaluate", str(job / "sparse.pt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["test"]["top1"] == result["test"]["top1"]


def test_networks_times_an_exported_model(finished, tmp_path):
    path, model = tmp_path / "net.json", finished / "sparse.pt"
    assert bench_main([*NETWORK, "--model", str(model), "--no-ort", "--json", str(path)]) == 0
    dense, saved = schema.load(str(path))  # validated
    assert dense["kind"] is None and saved["kind"] == "1xN" and saved["n"] == 4
    assert dense["model_file"] == saved["model_file"] == str(model)
    assert dense["arch"] == saved["arch"] == "digits_cnn"
    assert saved["ok"] and saved["max_rel_err"] <= saved["tol"]
    assert (saved["convs"], saved["sparse_convs"]) == (3, 2)
    assert saved["flop_reduction"] == dense["flops"] / saved["flops"] > 1
    assert saved["speedup"] == saved["dense_latency_ms"] / saved["latency_ms"]
    assert saved["dense_engine"] == "pytorch" and saved["engine"] == "pytorch"
    # ``sparsity``: the zero fraction of the file's conv and linear weights
    assert 0 < saved["sparsity"] < 0.5


def test_networks_model_must_be_an_exported_file(finished, capsys):
    with pytest.raises(SystemExit):
        bench_main([*NETWORK, "--model", str(finished / "pruned.pt")])
    assert "--model: expected a model written by" in capsys.readouterr().err


def test_onnxruntime_baseline(tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    model = get_model("digits_cnn").eval()
    forward, version = latency.onnxruntime_forward(model, "digits_cnn", torch.get_num_threads())
    x = torch.randn(5, *MODELS["digits_cnn"].input_shape)
    with torch.no_grad():
        torch.testing.assert_close(forward(x), model(x), rtol=1e-4, atol=1e-5)
    assert version == ort.__version__

    path = tmp_path / "net.json"
    assert bench_main([*NETWORK, "--arch", "digits_cnn", "--kind", "1xN", "--n", "4",
                       "--sparsity", "0.5", "--backend", "cpu", "--json", str(path)]) == 0
    records = schema.load(str(path))
    assert [(r["kind"], r["engine"]) for r in records] == [
        (None, "pytorch"), (None, "onnxruntime"), ("1xN", "pytorch")]
    torch_dense, ort_dense, sparse = records
    assert ort_dense["ok"] and ort_dense["engine_version"] == ort.__version__
    assert ort_dense["max_rel_err"] <= ort_dense["tol"]
    # Every speed-up is against the faster dense baseline, named in the record.
    faster = min((torch_dense, ort_dense), key=lambda r: r["latency_ms"])
    for r in records:
        assert r["dense_latency_ms"] == faster["latency_ms"]
        assert r["dense_engine"] == faster["engine"]
        assert r["speedup"] == r["dense_latency_ms"] / r["latency_ms"]
    out = tmp_path / "report"
    assert bench_main(["report", str(path), "--out", str(out)]) == 0
    report = (out / "report.md").read_text()
    assert "| vs dense |" in report and "| digits_cnn | eager | dense (onnxruntime) |" in report


def test_missing_onnxruntime_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # find_spec: not installed
    path = tmp_path / "net.json"
    assert bench_main([*NETWORK, "--batch", "1", "2", "--arch", "digits_cnn", "--kind", "1xN",
                       "--n", "4", "--sparsity", "0.5", "--backend", "cpu",
                       "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.count("onnxruntime not installed") == 1
    assert "pip install 'sparsekernels[bench]'" in out
    assert {r["engine"] for r in schema.load(str(path))} == {"pytorch"}


def test_version_3_network_records_read_as_pytorch_runs():
    old = next(r for r in schema.load("tests/fixtures/bench_small.json")
               if r["record_type"] == "network")
    assert old["schema_version"] == schema.SCHEMA_VERSION
    assert (old["engine"], old["engine_version"]) == ("pytorch", old["torch_version"])
    assert old["model_file"] is None
