"""Train the dense digits CNN once, run every recipe of
``sparsekernels.train.recipes`` from it, and write the accuracy table:

    python scripts/digits_methods.py [--out benchmarks/results/training]

writes ``digits_methods.json`` (every run's result record) and
``digits_methods.md`` (the table the README includes).
"""
import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from sparsekernels.train.config import RunConfig
from sparsekernels.train.pipeline import run
from sparsekernels.train.recipes import DENSE, DIGITS_RECIPES, recipe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="benchmarks/results/training")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        dense = run(RunConfig(**DENSE, method="dense", job_dir=f"{tmp}/dense"), progress=False)
        rows.append(_row("dense", dense, time.perf_counter() - start))
        for name in DIGITS_RECIPES:
            start = time.perf_counter()
            result = run(RunConfig(**recipe(name, pretrained_model=f"{tmp}/dense/dense.pt",
                                            job_dir=f"{tmp}/{name}")), progress=False)
            rows.append(_row(name, result, time.perf_counter() - start))
    env = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu": platform.processor() or platform.machine(), "python": platform.python_version()}
    (out / "digits_methods.json").write_text(json.dumps({"env": env, "runs": rows}, indent=2))
    (out / "digits_methods.md").write_text(_markdown(rows, env))
    print(_markdown(rows, env))


def _row(name, result, seconds):
    cfg = result["config"]
    return {"recipe": name, "method": cfg["method"], "target": cfg["pr_target"],
            "top1": result["test"]["top1"], "sparsity": result["sparsity"],
            "params": result["params"], "nonzero_params": result["nonzero_params"],
            "flops": result["flops"], "flops_dense": result["flops_dense"],
            "flops_union": result["flops_union"],
            "seconds": round(seconds, 1)}


def _markdown(rows, env):
    dense = rows[0]["top1"]
    lines = [f"Digits (scikit-learn, 1437 train / 360 test, seed 0), `digits_cnn`; "
             f"torch {env['torch']}, {env['threads']} CPU threads. "
             "Sparsity: zeros counted in the pruned layers' saved weights "
             "(filter methods: fraction of channels removed). FLOPs: DPPNet's P static convs, "
             "and in brackets the paper's count on their union support.", "",
             "| recipe | method | target | sparsity reached | top-1 | Δ vs dense | "
             "nonzero params | FLOPs vs dense | time (s) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sparsity = "—" if r["sparsity"] is None else f"{r['sparsity']:.3f}"
        flops = f"{r['flops'] / r['flops_dense']:.2f}×"
        if r["flops_union"] != r["flops"]:
            flops += f" ({r['flops_union'] / r['flops_dense']:.2f}× union)"
        target = {"dense": "—", "dppnet": "learned"}.get(r["method"], f"{r['target']:.2f}")
        lines.append(
            f"| {r['recipe']} | {r['method']} | {target} | {sparsity} | "
            f"{100 * r['top1']:.2f}% | {100 * (r['top1'] - dense):+.2f} | "
            f"{r['nonzero_params']:,} | {flops} | {r['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
