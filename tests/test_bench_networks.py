"""The whole-network benchmark (``python -m sparsekernels.bench networks``) on
small zoo models: records, honest conv and FLOP counts, the correctness gate,
torch.compile (no timing is asserted)."""
import pytest

from sparsekernels.bench import kinds, main, schema

# The ONNX Runtime baseline has its own tests (test_latency_summary.py).
FAST = ["networks", "--device", "cpu", "--batch", "1", "--repeat", "1", "--warmup", "0",
        "--rotate", "2", "--backend", "cpu", "--no-ort"]


def run(tmp_path, *extra) -> tuple[int, list[dict]]:
    path = tmp_path / "networks.json"
    rc = main([*FAST, *extra, "--json", str(path)])
    return rc, schema.load(str(path))  # load() validates every record


def test_resnet20_dense_vs_sparse(tmp_path):
    rc, records = run(tmp_path, "--arch", "resnet20", "--sparsity", "0.5", "0.9", "--kind", "1xN")
    assert rc == 0
    dense, *sparse = records
    assert all(r["keep_freed_memory"] for r in records)  # the default, for dense and sparse
    assert dense["kind"] is None and dense["speedup"] == 1.0 and dense["flop_reduction"] == 1.0
    assert dense["memory_format"] == dense["dense_layout"]  # the faster layout's record
    assert [r["sparsity"] for r in sparse] == [0.5, 0.9]
    for r in sparse:
        assert r["ok"] and r["mode"] == "eager" and r["kind"] == "1xN" and r["n"] == 16
        # The stem stays dense by default, and the record says so.
        assert r["exclude"] == ["conv1"] and r["dense_convs"] == ["conv1"]
        assert (r["convs"], r["sparse_convs"]) == (19, 18)
        assert r["dense_flops"] == dense["flops"] > r["flops"]
        assert r["flop_reduction"] == r["dense_flops"] / r["flops"]
        assert r["speedup"] == r["dense_latency_ms"] / r["latency_ms"]
        assert r["throughput_ips"] == pytest.approx(1e3 / r["latency_ms"])
        assert r["max_rel_err"] <= r["tol"]
    assert sparse[1]["flop_reduction"] > sparse[0]["flop_reduction"] > 1


def test_stripe_network_records(tmp_path):
    rc, records = run(tmp_path, "--arch", "resnet20", "--sparsity", "0.75", "--kind", "stripe")
    dense, sparse = records
    assert rc == 0 and sparse["ok"] and sparse["kind"] == "stripe" and sparse["n"] is None
    assert (sparse["convs"], sparse["sparse_convs"]) == (19, 18)
    assert sparse["flop_reduction"] == pytest.approx(4, rel=0.1)


def test_options_change_what_stays_dense(tmp_path):
    rc, records = run(tmp_path, "--arch", "resnet20", "--sparsity", "0.5", "--no-dense-stem",
                      "--exclude", "layer3.*", "--n", "32", "--kind", "1xN")
    sparse = records[1]
    # N=32 does not divide the 16-channel stage: padded (the default), so it is sparse.
    assert rc == 0 and sparse["exclude"] == ["layer3.*"]
    assert sparse["sparse_convs"] == 19 - 6 and all(n.startswith("layer3.")
                                                    for n in sparse["dense_convs"])
    rc, records = run(tmp_path, "--arch", "resnet20", "--sparsity", "0.5", "--n", "32",
                      "--no-pad-partial", "--kind", "1xN")
    assert records[-1]["sparse_convs"] == 12  # the 16-channel convs are left dense instead


def test_correctness_gate_rejects_a_wrong_network(tmp_path, monkeypatch):
    good = kinds.KINDS["1xN"]

    class Wrong(kinds.Kind):
        def sparsify(self, model, *args):
            model = good.sparsify(model, *args)
            for m in model.modules():
                if isinstance(m, good.module):  # the kernel is off; its weights are right
                    m.forward = lambda x, f=m.forward: f(x) * 1.5
            return model

    monkeypatch.setitem(kinds.KINDS, "wrong", Wrong(*good))
    rc, records = run(tmp_path, "--arch", "digits_cnn", "--sparsity", "0.5", "--kind", "wrong")
    dense, wrong = records
    assert rc == 1 and dense["ok"] and not wrong["ok"]
    assert wrong["error"].startswith("wrong result") and wrong["latency_ms"] is None


def test_compiled_mode(tmp_path):
    rc, records = run(tmp_path, "--arch", "digits_cnn", "--sparsity", "0.5", "--compile",
                      "--kind", "1xN")
    assert rc == 0
    assert [(r["mode"], r["kind"]) for r in records] == [
        ("eager", None), ("eager", "1xN"), ("compiled", None), ("compiled", "1xN")]
    assert all(r["ok"] for r in records)


@pytest.mark.parametrize("isolate", [True, False])
def test_each_arch_in_its_own_process(tmp_path, isolate):
    """--isolate (the default): one child process per architecture, in order,
    all appending to the file and naming the command that was given."""
    flag = "--isolate" if isolate else "--no-isolate"
    rc, records = run(tmp_path, "--arch", "resnet20", "digits_cnn", "--sparsity", "0.5",
                      "--kind", "1xN", flag)
    assert rc == 0
    archs = [r["arch"] for r in records]
    assert set(archs) == {"resnet20", "digits_cnn"}
    assert archs == sorted(archs, key=["resnet20", "digits_cnn"].index)
    assert len({r["run_id"] for r in records}) == (2 if isolate else 1)
    (command,) = {r["command"] for r in records}
    assert "--arch resnet20 digits_cnn" in command and "--only-arch" not in command
