"""Plot speedup vs sparsity per layer from ``python -m sparsekernels.bench --json``.

    python benchmarks/plot.py results/cpu.json [more.json ...] [--out-dir DIR]

One PNG per JSON file (next to it unless --out-dir): a panel per
(pass, backend, n), a line per layer, and the dense break-even at 1x.
Without matplotlib it says so and exits 0, so scripts can call it blindly.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict


def panels(records: list[dict]) -> dict[tuple, dict[str, list[tuple[float, float]]]]:
    """{(passes, backend, n): {layer: [(sparsity, speedup), ...] sorted}}; failed runs dropped."""
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("speedup"):
            key = (r["passes"], r["backend"], r["n"])
            out[key][r["layer"]].append((r["sparsity"], r["speedup"]))
    return {key: {layer: sorted(pts) for layer, pts in lines.items()} for key, lines in out.items()}


def _title(records: list[dict]) -> str:
    r = records[0]
    where = r.get("device_name") or r["device"]
    return f"{r['kind']} {r['dtype']} batch {r['batch']} on {r['device']} ({where})"


def plot(path: str, out_dir: str | None, plt) -> str:
    with open(path) as f:
        records = json.load(f)
    groups = panels(records)
    if not groups:
        raise ValueError(f"{path}: no record with a speedup")
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, ((passes, backend, n), lines) in zip(axes[0], sorted(groups.items())):
        for layer, pts in lines.items():
            ax.plot(*zip(*pts), marker="o", label=layer)
        ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set(title=f"{passes}, {backend}, N={n}", xlabel="sparsity",
               ylabel="speedup vs dense (x)")
        ax.legend(fontsize="small")
    fig.suptitle(_title(records))
    fig.tight_layout()
    stem = os.path.splitext(os.path.basename(path))[0] + ".png"
    png = os.path.join(out_dir or os.path.dirname(os.path.abspath(path)), stem)
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return png


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", nargs="+", help="files written by --json")
    parser.add_argument("--out-dir", help="where the PNGs go (default: beside each JSON)")
    args = parser.parse_args(argv)
    try:
        import matplotlib
        matplotlib.use("Agg")  # headless machines
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed; no plot written", file=sys.stderr)
        return 0
    if args.out_dir:
        os.makedirs(args.out_dir, exist_ok=True)
    for path in args.json:
        print(f"wrote {plot(path, args.out_dir, plt)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
