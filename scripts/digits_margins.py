"""How far each accuracy test of ``tests/test_train_digits.py`` sits from its
bar (``sparsekernels.train.recipes.DIGITS_BARS``), over seeds and CPU code
paths, so that its bars and recipes are chosen on measured margins:

    python scripts/digits_margins.py [--seeds 0 1 2] [--variants native onednn-avx2 ...] [--merge]

Each variant runs in its own process under the environment that picks a
code path (oneDNN, ATen and MKL read theirs once, at start-up), trains the
dense model for every seed (the seed also draws the train/test split), then
every recipe from it, exactly as the tests do. It writes
``digits_margins.json``: every run, and per recipe the worst margin (top-1
minus the lowest passing top-1; one test image is 1/360 = 0.28 points).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

# Environments that change the float results the way another machine would.
VARIANTS = {
    "native": {},
    "sk-avx2": {"SPARSEKERNELS_CPU_SIMD": "avx2"},
    "sk-generic": {"SPARSEKERNELS_CPU_SIMD": "generic"},
    "onednn-avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    # torch as an AVX2-only CPU runs it: ATen kernels, oneDNN and MKL.
    "avx2-cpu": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
                 "MKL_ENABLE_INSTRUCTIONS": "AVX2", "SPARSEKERNELS_CPU_SIMD": "avx2"},
    "1-thread": {"OMP_NUM_THREADS": "1"},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--recipes", nargs="+", default=None,
                   help="names from DIGITS_BARS (default: all); dense always runs")
    p.add_argument("--out", default="benchmarks/results/training/digits_margins.json")
    p.add_argument("--merge", action="store_true",
                   help="keep the other variants already in --out (e.g. fewer seeds for some)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if any(s < 0 for s in args.seeds):
        p.error(f"--seeds: expected non-negative ints, got {args.seeds}")
    from sparsekernels.train.recipes import DIGITS_BARS

    names = args.recipes or [n for n in DIGITS_BARS if n != "dense"]
    unknown = sorted(set(names) - set(DIGITS_BARS))
    if unknown:
        p.error(f"--recipes: unknown {unknown}; known: {sorted(DIGITS_BARS)}")
    if args.worker:
        print(json.dumps(_measure(args.seeds, names)))
        return
    out = Path(args.out)
    variants = _earlier_variants(out, p) if args.merge and out.exists() else {}
    for variant in args.variants:  # written after each, so a long sweep keeps what it did
        variants[variant] = _run_variant(variant, args.seeds, names)
        report = {"env": _machine(), "variants": variants,
                  "same_top1_as_native": _same_as_native(variants), "summary": _summary(variants)}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report["summary"]))


def _earlier_variants(out, parser):
    try:
        variants = json.loads(out.read_text())["variants"]
    except (ValueError, KeyError, TypeError) as err:
        parser.error(f"--merge: {out} is not a digits_margins JSON ({err!r})")
    return variants


def _run_variant(variant, seeds, names):
    """The rows of one variant, measured in a child process under its env."""
    env = {**os.environ, **VARIANTS[variant]}
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--seeds", *map(str, seeds),
           "--recipes", *names]
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True)
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{variant}: {measured['paths']}", file=sys.stderr)
    return {"env": VARIANTS[variant], "seeds": seeds, **measured}


def _measure(seeds, names):
    """Dense, then every recipe in ``names``, per seed (this process's paths)."""
    import torch

    import sparsekernels._C as C
    from sparsekernels.train.config import RunConfig
    from sparsekernels.train.pipeline import run
    from sparsekernels.train.recipes import DENSE, DIGITS_BARS, recipe

    rows = []
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            dense = run(RunConfig(**{**DENSE, "seed": seed}, method="dense",
                                  job_dir=f"{tmp}/dense"), progress=False)["test"]["top1"]
            rows.append(_row("dense", seed, dense, dense))
            for name in names:
                bar = DIGITS_BARS[name]
                epochs = {} if bar.num_epochs is None else {"num_epochs": bar.num_epochs}
                cfg = recipe(name, seed=seed, pretrained_model=f"{tmp}/dense/dense.pt",
                             job_dir=f"{tmp}/{name}", **epochs)
                top1 = run(RunConfig(**cfg), progress=False)["test"]["top1"]
                rows.append(_row(name, seed, top1, dense))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    paths = {"sparsekernels": C.cpu_simd_path(), "aten": torch.backends.cpu.get_cpu_capability(),
             "threads": torch.get_num_threads()}
    return {"paths": paths, "runs": rows}


def _row(name, seed, top1, dense_top1):
    from sparsekernels.train.recipes import DIGITS_BARS

    floor = DIGITS_BARS[name].floor(dense_top1)
    return {"recipe": name, "seed": seed, "top1": top1, "dense_top1": dense_top1,
            "floor": floor, "margin_points": round(100 * (top1 - floor), 2)}


def _same_as_native(variants):
    """Per variant: did every run reach the very top-1 it reached natively
    (a path that training never takes leaves them all equal)?"""
    if "native" not in variants:
        return {}
    native = {(r["recipe"], r["seed"]): r["top1"] for r in variants["native"]["runs"]}
    return {v: all(native.get((r["recipe"], r["seed"])) == r["top1"] for r in m["runs"])
            for v, m in variants.items()}


def _summary(variants):
    """Per recipe: its bar, and the worst / mean margin over every run."""
    from sparsekernels.train.recipes import DIGITS_BARS

    by_recipe = {}
    for variant, measured in variants.items():
        for r in measured["runs"]:
            by_recipe.setdefault(r["recipe"], []).append({**r, "variant": variant})
    summary = {}
    for name, runs in by_recipe.items():
        worst = min(runs, key=lambda r: r["margin_points"])
        bar = DIGITS_BARS[name]
        summary[name] = {
            "bar": f"{bar.kind} {bar.value}", "runs": len(runs),
            "worst_margin_points": worst["margin_points"],
            "worst_at": {"variant": worst["variant"], "seed": worst["seed"]},
            "mean_margin_points": round(sum(r["margin_points"] for r in runs) / len(runs), 2),
            "failed": sum(r["margin_points"] < 0 for r in runs)}
    return summary


def _table(summary):
    lines = ["| recipe | bar | runs | worst margin (points) | at | mean margin | failed |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        at = f"{s['worst_at']['variant']}, seed {s['worst_at']['seed']}"
        lines.append(f"| {name} | {s['bar']} | {s['runs']} | {s['worst_margin_points']:+.2f} | "
                     f"{at} | {s['mean_margin_points']:+.2f} | {s['failed']} |")
    return "\n".join(lines)


def _machine():
    import torch

    return {"torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "python": platform.python_version()}


if __name__ == "__main__":
    main()
