"""The layer benchmark of two checkouts, run alternately (A B A B ...) in one
session, so a change's cost is read side by side rather than across days:

    python scripts/bench_ab.py BASE_DIR OUT_DIR [--rounds 3] -- <bench layers args>

BASE_DIR is another built checkout (e.g. ``git worktree add /tmp/base REV``
then ``python setup.py build_ext --inplace`` there); the current checkout is
the other side. Each round runs ``python -m sparsekernels.bench layers ARGS``
in each, appending to ``OUT_DIR/{base,head}.json``. ``OUT_DIR/summary.json``
then holds, per configuration, the median over rounds of the sparse and dense
times of each side and head/base ratios (the dense ratio shows the drift of
the machine between the two sides).
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


def _run(checkout: Path, out: Path, bench_args: list[str]) -> None:
    # cwd first on sys.path: each side imports its own sparsekernels.
    subprocess.run([sys.executable, "-m", "sparsekernels.bench", "layers", *bench_args,
                    "--json", str(out)], cwd=checkout, check=True)


def _side(path: Path) -> dict:
    """Which checkout and machine a side's records came from."""
    first = json.loads(path.read_text())[0]
    return {k: first[k] for k in ("git_commit", "device_name", "cpu_simd", "threads",
                                  "torch_version")}


def _medians(path: Path) -> dict:
    times = defaultdict(lambda: ([], []))
    for r in json.loads(path.read_text()):
        if r.get("record_type") == "layer" and r["ok"]:
            sparse, dense = times[tuple(r[k] for k in KEY)]
            sparse.append(r["sparse_ms"])
            dense.append(r["dense_ms"])
    return {k: (statistics.median(s), statistics.median(d)) for k, (s, d) in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--summarize", action="store_true",
                   help="only (re)write summary.json from the records already in OUT_DIR")
    args, bench_args = p.parse_known_args()
    bench_args = [a for a in bench_args if a != "--"]
    args.out = args.out.resolve()  # each side runs in its own checkout
    args.out.mkdir(parents=True, exist_ok=True)
    sides = {"base": args.base.resolve(), "head": HEAD}
    if not args.summarize:
        for side in sides:
            (args.out / f"{side}.json").unlink(missing_ok=True)
        for _ in range(args.rounds):
            for side, checkout in sides.items():
                _run(checkout, args.out / f"{side}.json", bench_args)
    base, head = (_medians(args.out / f"{side}.json") for side in sides)
    rows = []
    for key in sorted(base.keys() & head.keys(), key=str):
        (bs, bd), (hs, hd) = base[key], head[key]
        rows.append({**dict(zip(KEY, key)), "base_sparse_ms": bs, "head_sparse_ms": hs,
                     "sparse_ratio": hs / bs, "base_dense_ms": bd, "head_dense_ms": hd,
                     "dense_ratio": hd / bd})
    ratios = [r["sparse_ratio"] for r in rows]
    summary = {"rounds": args.rounds, "bench_args": bench_args,
               "sides": {side: _side(args.out / f"{side}.json") for side in sides},
               "rows": rows,
               "sparse_ratio_geomean": statistics.geometric_mean(ratios),
               "dense_ratio_geomean": statistics.geometric_mean([r["dense_ratio"] for r in rows])}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"{len(rows)} configurations; head/base sparse time geomean "
          f"{summary['sparse_ratio_geomean']:.3f}, dense {summary['dense_ratio_geomean']:.3f}")


if __name__ == "__main__":
    main()
