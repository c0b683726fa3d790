"""benchmarks/cpu_instruction_counts.py counts one call of each conv under
callgrind and attributes the count to the library's own kernels."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sparsekernels import _ext

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind")
@pytest.mark.skipif(not _ext.has_cpu_kernels(), reason="the compiled CPU kernels")
def test_instruction_count_records(tmp_path):
    out = tmp_path / "counts.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cpu_instruction_counts.py"),
                    "--suite", "quick", "--layers", "3x3_16-32@8", "--batch", "2",
                    "--sparsity", "0.5", "0.9", "--json", str(out)], check=True)
    run = json.loads(out.read_text())
    records = run["records"]
    assert [(r["conv"], r["layout"]) for r in records] == [
        ("dense", "nchw"), ("dense", "channels_last"), ("sparse", "nchw"), ("sparse", "nchw")]
    # Valgrind decodes no AVX-512: the library reports the path it took.
    assert run["environment"]["cpu_simd"] in ("avx2", "generic")
    half, tenth = records[2], records[3]
    assert (half["sparsity"], tenth["sparsity"]) == (0.5, 0.9)
    for r in records:
        assert r["instructions"] > 0
        assert sum(count for _, count in r["top_functions"]) <= r["instructions"]
    # The counted call is the kernel's: its forward is among the top
    # functions, and fewer kept weights execute fewer instructions.
    assert any("forward" in name or "fwd_" in name for name, _ in half["top_functions"])
    assert tenth["instructions"] < half["instructions"]
    assert half["ir_ratio"] == pytest.approx(
        min(records[0]["instructions"], records[1]["instructions"]) / half["instructions"],
        rel=1e-3)
