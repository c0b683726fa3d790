"""The ceilings of the CPU kernels' register tiles on one core (see
``cpu_tile_ceiling.cpp``): compiles it with the C++ compiler the extension
uses, runs it on an otherwise idle machine and appends a record (GFLOP/s per
core and the fraction of the core's FMA peak) to a JSON list:

    python benchmarks/cpu_tile_ceiling.py --json benchmarks/results/checks/tile-ceiling/xeon.json

Read beside the layer benchmarks: a kernel that runs its tile at the
ceiling measured here loses the rest to memory, layout and threads; one far
below it is not limited by its instruction mix.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def measure() -> dict:
    cxx = os.environ.get("CXX", "c++")
    with tempfile.TemporaryDirectory() as tmp:
        exe = Path(tmp) / "tile_ceiling"
        subprocess.run([cxx, "-O3", "-std=c++17", "-ffp-contract=fast",
                        str(HERE / "cpu_tile_ceiling.cpp"), "-o", str(exe)], check=True)
        rates = json.loads(subprocess.run([str(exe)], check=True, capture_output=True,
                                          text=True).stdout)
    isa = rates.pop("isa")
    peak = rates["fma_peak"]
    peak_avx2 = rates.get("fma_peak_avx2", peak)
    compiler = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    return {
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "cpu_model": _cpu_model(), "isa": isa, "compiler": compiler.splitlines()[0],
        "gflops_per_core": rates,
        "fraction_of_fma_peak": {k: round(v / (peak_avx2 if k.endswith("avx2") else peak), 3)
                                 for k, v in rates.items() if not k.startswith("fma_peak")},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", type=Path, help="append the record to this JSON list")
    args = p.parse_args()
    record = measure()
    print(json.dumps(record, indent=1))
    if args.json:
        records = json.loads(args.json.read_text()) if args.json.exists() else []
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(records + [record], indent=1) + "\n")


if __name__ == "__main__":
    main()
