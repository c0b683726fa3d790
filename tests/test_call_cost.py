"""scripts/call_cost.py: the cost of an eager 1xN call around its kernel (no
timing is asserted: the rows, the derived column and the file)."""
import importlib.util
import json
from pathlib import Path

import pytest

from sparsekernels._ext import C

pytestmark = pytest.mark.skipif(C is None, reason="compiled kernels unavailable")
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "call_cost.py"


def test_every_layer_and_sparsity_is_timed_through_each_route(tmp_path):
    spec = importlib.util.spec_from_file_location("call_cost", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "c.json"
    result = script.main(["--suite", "resnet56", "--sparsity", "0.5", "1.0", "--repeat", "3",
                          "--json", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    rows = result["rows"]
    assert len(rows) == 2 * 6 and {r["sparsity"] for r in rows} == {0.5, 1.0}
    for r in rows:
        assert all(r[k] > 0 for k in ("module_us", "bound_us", "native_us", "op_us"))
        assert r["python_us"] == pytest.approx(r["module_us"] - r["bound_us"])
        assert r["op_overhead_us"] == pytest.approx(r["op_us"] - r["native_us"])
