"""benchmarks/cpu_tile_ceiling.py compiles and runs its loops, and reports
each against the FMA peak it measured on the same core."""
import importlib.util
import platform
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("c++") is None or platform.machine() != "x86_64",
                    reason="an x86-64 C++ compiler")
def test_tile_ceiling_record(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "cpu_tile_ceiling", ROOT / "benchmarks" / "cpu_tile_ceiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    record = mod.measure()
    rates, fractions = record["gflops_per_core"], record["fraction_of_fma_peak"]
    assert record["isa"] in ("avx512", "avx2")
    expected = {"fwd_tile_4x3_aligned_avx2", "fwd_tile_4x3_shifted_avx2"}
    if record["isa"] == "avx512":
        expected |= {"fwd_tile_8x3_aligned", "fwd_tile_8x3_shifted", "fwd_tile_8x3_asm",
                     "fwd_tile_8x3_asm_no_input_loads", "fwd_tile_8x3_asm_no_broadcasts",
                     "group_member", "group_member_no_stores"}
    assert set(fractions) == expected
    assert all(rate > 0 for rate in rates.values())
    # Each loop's FLOPs are counted, not assumed: none can pass the FMA peak
    # by more than the timing noise of a shared machine.
    assert all(0 < f < 1.5 for f in fractions.values()), fractions
