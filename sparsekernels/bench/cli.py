"""Command line of the microbenchmark: ``python -m sparsekernels.bench --help``."""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import shlex
import sys
from collections import defaultdict
from typing import Optional

import torch

from .. import _ext
from ..ops import backends
from .measure import KINDS, TOLERANCE, Plan, run_layer
from .suites import SUITES, select

try:
    from tqdm import tqdm
except ImportError:  # progress bar is optional
    tqdm = None

DTYPES = {str(d).removeprefix("torch."): d for d in TOLERANCE}
PASSES = {"forward": False, "backward": True}  # name -> time the backward too
# Defaults that --quick shrinks (an explicit option still wins).
DEFAULTS = {"suite": "resnet50", "batch": 8, "warmup": 3, "repeat": 10}
QUICK = {"suite": "quick", "batch": 2, "warmup": 1, "repeat": 3}


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text}")
    return value


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an int >= 0, got {text}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m sparsekernels.bench",
        description="Time structured-sparse conv2d against the dense conv on the same device.",
    )
    p.add_argument("--suite", choices=sorted(SUITES), help="layer shapes (default resnet50)")
    p.add_argument("--quick", action="store_true",
                   help="tiny suite, batch 2, 1 warmup, 3 repeats: runs in seconds")
    p.add_argument("--layers", nargs="+", metavar="GLOB", help="keep layers whose name matches")
    p.add_argument("--kind", choices=sorted(KINDS), default="1xN", help="sparsity structure")
    p.add_argument("--n", nargs="+", type=_positive, default=[16], help="1xN block heights")
    p.add_argument("--sparsity", nargs="+", type=_fraction, default=[0.5, 0.75, 0.9],
                   help="fractions of blocks pruned (random masks)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--backend", nargs="+", choices=backends.BACKENDS, default=["auto"],
                   help="sparse backends to time (auto: the device's best)")
    p.add_argument("--batch", type=_positive, help="batch size (default 8)")
    p.add_argument("--threads", type=_positive, help="torch.set_num_threads (CPU)")
    p.add_argument("--warmup", type=_nonnegative, help="untimed rounds first (default 3)")
    p.add_argument("--repeat", type=_positive, help="timed rounds; the median is kept (default 10)")
    p.add_argument("--passes", nargs="+", choices=list(PASSES), default=["forward"],
                   help="'backward' times forward+backward against the dense forward+backward")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction,
                   help="set cuDNN/matmul TF32 (default: leave PyTorch's setting)")
    p.add_argument("--seed", type=int, default=0, help="data and mask seed")
    p.add_argument("--json", metavar="PATH", help="write one record per configuration")
    return p


def _fill_defaults(args: argparse.Namespace) -> None:
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)


def _plan(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Plan:
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    try:
        resolved = [backends.resolve(b, device) for b in args.backend]
    except (ValueError, RuntimeError) as exc:
        parser.error(f"--backend: {exc}")
    return Plan(
        kind=args.kind, dtype=DTYPES[args.dtype], device=device, batch=args.batch,
        ns=tuple(dict.fromkeys(args.n)), sparsities=tuple(dict.fromkeys(args.sparsity)),
        backends=tuple(dict.fromkeys(resolved)), warmup=args.warmup, repeat=args.repeat,
        seed=args.seed,
    )


def _configure_torch(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)  # the CPU kernels read at::get_num_threads too
    if args.device == "cuda":
        torch.backends.cudnn.benchmark = True
        if args.tf32 is not None:
            torch.backends.cudnn.allow_tf32 = args.tf32
            torch.backends.cuda.matmul.allow_tf32 = args.tf32


def _cpu_name() -> str:
    try:  # platform.processor() is often empty on Linux
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            return next(names)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _run_meta(plan: Plan, argv: list[str]) -> dict:
    """Fields shared by every record of this run."""
    on_cuda = plan.device.type == "cuda"
    flags = {"cudnn": torch.backends.cudnn.allow_tf32,
             "matmul": torch.backends.cuda.matmul.allow_tf32}
    return {
        # Whether the dense fp32 baseline may run in TF32 (the sparse kernels never do).
        "tf32": on_cuda and plan.dtype == torch.float32 and flags["cudnn"],
        "tf32_flags": flags,
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "cpu_simd": _ext.C.cpu_simd_path() if _ext.has_cpu_kernels() else None,
        "device_name": torch.cuda.get_device_name(plan.device) if on_cuda else _cpu_name(),
        "warmup": plan.warmup, "repeat": plan.repeat, "seed": plan.seed,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m sparsekernels.bench " + shlex.join(argv),
    }


# ---- printing --------------------------------------------------------------------
_HEADER = (f"{'layer':<20} {'shape':<20} {'pass':<7} {'backend':<9} {'n':>3} {'sparsity':>8} "
           f"{'dense_ms':>14} {'sparse_ms':>9} {'speedup':>7} {'err':>8}")


def _row(r: dict) -> str:
    shape = f"{r['cin']}->{r['cout']} {r['kh']}x{r['kw']}/{r['stride']} @{r['hw']}"
    head = (f"{r['layer']:<20} {shape:<20} {'fwd+bwd' if r['passes'] != 'forward' else 'fwd':<7} "
            f"{r['backend']:<9} {r['n']:>3} {r['sparsity']:>8.2f} ")
    dense = f"{r['dense_ms']:.3f} ({'cl' if r['dense_layout'] == 'channels_last' else 'nchw'})"
    if r["error"]:
        return head + f"{dense:>14}  ERROR {r['error']}"
    flag = "" if r["ok"] else f"  FAIL (tol {r['tol']:.0e})"
    return head + (f"{dense:>14} {r['sparse_ms']:>9.3f} {r['speedup']:>6.2f}x "
                   f"{r['max_rel_err']:>8.1e}{flag}")


def _summary(records: list[dict]) -> list[str]:
    """Geometric-mean speedup over layers per (pass, backend, n, sparsity)."""
    groups = defaultdict(list)
    for r in records:
        if r["speedup"]:
            groups[(r["passes"], r["backend"], r["n"], r["sparsity"])].append(r["speedup"])
    lines = ["", "geomean speedup over layers (dense_ms / sparse_ms, >1 = sparse faster)",
             f"{'pass':<17} {'backend':<9} {'n':>3} {'sparsity':>8} {'layers':>6} {'geomean':>8}"]
    for (passes, backend, n, sparsity), s in sorted(groups.items()):
        geomean = math.exp(sum(map(math.log, s)) / len(s))
        lines.append(f"{passes:<17} {backend:<9} {n:>3} {sparsity:>8.2f} {len(s):>6} "
                     f"{geomean:>7.2f}x")
    return lines


def _write_json(path: str, records: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(records, f, indent=1)
        f.write("\n")


# ---- entry point -----------------------------------------------------------------
def main(argv: Optional[list[str]] = None) -> int:
    """Run the benchmark; 0 when every configuration ran and passed its check."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    _fill_defaults(args)
    try:
        layers = select(args.suite, args.layers)
    except ValueError as exc:
        parser.error(str(exc))
    plan = _plan(args, parser)
    _configure_torch(args)
    meta = _run_meta(plan, argv)

    per_layer = len(plan.ns) * len(plan.sparsities) * len(plan.backends)
    bar = tqdm(total=per_layer * len(layers) * len(args.passes), unit="cfg") if tqdm else None
    say = bar.write if bar else print
    say(f"# {meta['command']}\n# torch {meta['torch_version']} | {plan.device.type} "
        f"{meta['device_name']} | {plan.dtype} | threads {meta['threads']} | "
        f"cpu simd {meta['cpu_simd']} | tf32 {meta['tf32']}")
    say(_HEADER)
    records = []
    for passes in args.passes:
        for layer in layers:
            for rec in run_layer(plan, layer, PASSES[passes]):
                records.append({**rec, **meta})
                say(_row(rec))
            if bar:
                bar.update(per_layer)
    if bar:
        bar.close()
    for line in _summary(records):
        print(line)
    failed = [r for r in records if not r["ok"]]
    if failed:
        print(f"\n{len(failed)} of {len(records)} configurations failed (FAIL/ERROR above)")
    if args.json:
        _write_json(args.json, records)
        print(f"wrote {len(records)} records to {args.json}")
    return 1 if failed else 0
