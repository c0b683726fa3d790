"""benchmarks/run_gpu.sh --dry-run on this CPU machine: every step but the
build runs (the loop probe compiled, the test selection collected, the
sanitizer cases and the benchmarks shrunk to the CPU, the report), and $OUT
ends with at most the six files the GPU machine returns, the JSON valid
results files."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from sparsekernels.bench import schema

ROOT = Path(__file__).resolve().parents[1]
STEPS = ("loop_probe", "tests", "memcheck", "layers_bf16", "layers_fp16", "layers_fp32", "networks", "report")


def test_dry_run_runs_every_step_and_returns_at_most_six_files(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    run = subprocess.run(["bash", "benchmarks/run_gpu.sh", "--dry-run"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    summary = (out / "summary.txt").read_text()
    assert run.returncode == 0, run.stdout[-3000:] + summary[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["layers_gpu.json", "networks_gpu.json", "results.tgz", "summary.txt"]
    for step in STEPS:
        assert f"== {step}: ok" in summary, step
    assert "== build: skipped (dry run)" in summary
    for name in ("layers_gpu.json", "networks_gpu.json"):
        records = schema.load(str(out / name))
        assert records and all(r["ok"] for r in records)
    json.loads((out / "layers_gpu.json").read_text())
    with tarfile.open(out / "results.tgz") as tar:
        names = set(tar.getnames())
    assert {f"./{s}.log" for s in STEPS} <= names
    assert "./report/report.md" in names
