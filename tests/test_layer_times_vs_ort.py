"""scripts/layer_times_vs_ort.py: the per-layer diagnosis of a network run
(no timing is asserted: the pairing, the sums and the file)."""
import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("onnxruntime")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "layer_times_vs_ort.py"


def _script():
    spec = importlib.util.spec_from_file_location("layer_times_vs_ort", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_conv_pairs_with_an_onnxruntime_node(tmp_path):
    out = tmp_path / "r.json"
    result = _script().main(["--arch", "resnet20", "--sparsity", "0.75", "--repeat", "2",
                             "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    assert result["convs_paired"]
    convs = [r for r in result["layers"] if "kernel" in r]
    assert len(convs) == 19 and all(r["ms"] > 0 and r["ort_ms"] > 0 for r in convs)
    # The stem stays dense; every other conv runs the sparse kernel.
    assert [r["sparse"] for r in convs] == [False] + [True] * 18
    types = result["by_type"]
    assert types["3x3 s1 dense"]["layers"] == 1
    assert sum(t["layers"] for t in types.values()) == 19
    assert sum(t["ms"] for t in types.values()) == pytest.approx(sum(r["ms"] for r in convs))
    assert result["leaves_ms"] >= sum(r["ms"] for r in convs)
