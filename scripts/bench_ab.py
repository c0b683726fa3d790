"""The layer or network benchmark of two checkouts, run alternately (A B A B
...) in one session, so a change's cost is read side by side rather than
across days:

    python scripts/bench_ab.py BASE_DIR OUT_DIR [--rounds 3] -- [layers] <bench layers args>
    python scripts/bench_ab.py BASE_DIR OUT_DIR [--rounds 3] -- networks <bench networks args>

BASE_DIR is another built checkout (e.g. ``git worktree add /tmp/base REV``
then ``python setup.py build_ext --inplace`` there); the current checkout is
the other side. Each round runs ``python -m sparsekernels.bench COMMAND ARGS``
in each (base first in even rounds, head first in odd ones), appending to
``OUT_DIR/{base,head}.json``. ``OUT_DIR/summary.json``
then holds, per configuration, the median over rounds of each side's times
and head/base ratios: for layers the sparse and the dense time of each
record; for networks the latency of each record (the dense models' records,
PyTorch and ONNX Runtime, are rows of their own). The dense ratios show the
drift of the machine between the two sides.
"""
import argparse
import json
import statistics
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HEAD = Path(__file__).resolve().parent.parent
KEY = ("layer", "pass", "kind", "n", "sparsity", "backend", "memory_format", "dtype", "batch")
NETWORK_KEY = ("arch", "batch", "engine", "mode", "kind", "n", "sparsity", "dtype")
COMMANDS = ("layers", "networks")


def _run(checkout: Path, out: Path, command: str, bench_args: list[str]) -> None:
    # cwd first on sys.path: each side imports its own sparsekernels.
    subprocess.run([sys.executable, "-m", "sparsekernels.bench", command, *bench_args,
                    "--json", str(out)], cwd=checkout, check=True)


def _side(path: Path) -> dict:
    """Which checkout and machine a side's records came from."""
    first = json.loads(path.read_text())[0]
    return {k: first[k] for k in ("git_commit", "device_name", "cpu_simd", "threads",
                                  "torch_version")}


def _layer_medians(path: Path) -> dict:
    times = defaultdict(lambda: ([], []))
    for r in json.loads(path.read_text()):
        if r.get("record_type") == "layer" and r["ok"]:
            sparse, dense = times[tuple(r[k] for k in KEY)]
            sparse.append(r["sparse_ms"])
            dense.append(r["dense_ms"])
    return {k: (statistics.median(s), statistics.median(d)) for k, (s, d) in times.items()}


def _network_medians(path: Path) -> dict:
    times = defaultdict(list)
    for r in json.loads(path.read_text()):
        if r.get("record_type") == "network" and r["ok"]:
            times[tuple(r[k] for k in NETWORK_KEY)].append(r["latency_ms"])
    return {k: statistics.median(t) for k, t in times.items()}


def _layer_rows(base: dict, head: dict) -> tuple[list, list, list]:
    rows = []
    for key in sorted(base.keys() & head.keys(), key=str):
        (bs, bd), (hs, hd) = base[key], head[key]
        rows.append({**dict(zip(KEY, key)), "base_sparse_ms": bs, "head_sparse_ms": hs,
                     "sparse_ratio": hs / bs, "base_dense_ms": bd, "head_dense_ms": hd,
                     "dense_ratio": hd / bd})
    return rows, [r["sparse_ratio"] for r in rows], [r["dense_ratio"] for r in rows]


def _network_rows(base: dict, head: dict) -> tuple[list, list, list]:
    rows = []
    for key in sorted(base.keys() & head.keys(), key=str):
        rows.append({**dict(zip(NETWORK_KEY, key)), "base_ms": base[key], "head_ms": head[key],
                     "ratio": head[key] / base[key]})
    sparse = [r["ratio"] for r in rows if r["kind"] is not None]
    return rows, sparse, [r["ratio"] for r in rows if r["kind"] is None]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--summarize", action="store_true",
                   help="only (re)write summary.json from the records already in OUT_DIR")
    args, bench_args = p.parse_known_args()
    bench_args = [a for a in bench_args if a != "--"]
    command = bench_args.pop(0) if bench_args and bench_args[0] in COMMANDS else "layers"
    args.out = args.out.resolve()  # each side runs in its own checkout
    args.out.mkdir(parents=True, exist_ok=True)
    sides = {"base": args.base.resolve(), "head": HEAD}
    if not args.summarize:
        for side in sides:
            (args.out / f"{side}.json").unlink(missing_ok=True)
        for r in range(args.rounds):
            # A B, then B A: neither side always runs first (a 5-round
            # network run with base always first read the unchanged dense
            # models at 0.85-0.94 head/base).
            order = list(sides.items())
            for side, checkout in (order if r % 2 == 0 else order[::-1]):
                _run(checkout, args.out / f"{side}.json", command, bench_args)
    medians, to_rows = ((_layer_medians, _layer_rows) if command == "layers"
                        else (_network_medians, _network_rows))
    rows, sparse, dense = to_rows(*(medians(args.out / f"{side}.json") for side in sides))
    summary = {"rounds": args.rounds, "command": command, "bench_args": bench_args,
               "sides": {side: _side(args.out / f"{side}.json") for side in sides},
               "rows": rows,
               "sparse_ratio_geomean": statistics.geometric_mean(sparse),
               "dense_ratio_geomean": statistics.geometric_mean(dense)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(rows)} configurations; head/base sparse time geomean "
          f"{summary['sparse_ratio_geomean']:.3f}, dense {summary['dense_ratio_geomean']:.3f}")


if __name__ == "__main__":
    main()
