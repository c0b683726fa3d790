"""``python -m sparsekernels.bench layers``: sparse conv layers against the dense conv.

Sweeps kind x N x sparsity x dtype x batch x memory format x pass x backend
over the layers of a suite (or ``--shape`` layers); see :mod:`.measure` for
how one layer is checked and timed and :mod:`.schema` for the records.
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict

import torch

from . import options
from .env import cache_bytes, environment
from .kinds import KINDS
from .measure import PASSES, Case, Plan, configs_per_layer, run_layer
from .roofline import measure_machine
from .schema import kind_label
from .suites import CUSTOM, SUITES, parse_shape, select

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional
    tqdm = None

PASS_ALIASES = {"backward": "all"}  # the first version's name for forward+backward
DEFAULTS = {"batch": [8], "warmup": 3, "repeat": 10}
QUICK = {"batch": [2], "warmup": 1, "repeat": 3}  # --quick: runs in seconds
DEFAULT_SUITE, QUICK_SUITE = "resnet50", "quick"


def _shape(text: str):
    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "layers", help="time sparse conv layers against the dense conv (the default command)",
        description="Time structured-sparse conv2d layers against the dense conv on the "
                    "same device, each configuration checked against a float64 reference first.")
    p.add_argument("--suite", choices=sorted(SUITES), help="layer shapes (default resnet50)")
    p.add_argument("--shape", nargs="+", type=_shape, metavar="CIN,COUT,K,STRIDE,HW",
                   help="benchmark these shapes instead of a suite")
    p.add_argument("--quick", action="store_true",
                   help="tiny suite, batch 2, 1 warmup, 3 repeats: runs in seconds")
    p.add_argument("--layers", nargs="+", metavar="GLOB", help="keep layers whose name matches")
    options.add_sweep_options(p, DEFAULTS)
    p.add_argument("--passes", nargs="+", choices=[*PASSES, *PASS_ALIASES], default=["forward"],
                   help="grad-input / grad-weight: that backward op alone; all: forward and "
                        "both ('backward' = all)")
    p.add_argument("--pad-partial", action="store_true",
                   help="allow an N that does not divide a layer's out_channels (the last "
                        "block row is zero-padded, as sparsify(pad_partial=True) does)")
    p.add_argument("--tf32", action=argparse.BooleanOptionalAction, default=True,
                   help="fp32 on CUDA: also time the dense conv with TF32 (reported apart)")
    p.set_defaults(run=run)
    return p


def _layers(args, parser) -> tuple[str, list]:
    if args.shape and args.suite:
        parser.error("give --suite or --shape, not both")
    if args.shape:
        suite, layers = CUSTOM, list(dict.fromkeys(args.shape))
    else:
        suite = args.suite or (QUICK_SUITE if args.quick else DEFAULT_SUITE)
        layers = SUITES[suite]
    try:
        return suite, select(layers, args.layers, suite)
    except ValueError as exc:
        parser.error(str(exc))


def _check_fit(args, parser, layers) -> None:
    """Reject (kind, N, layer) combinations that would need a padded block."""
    if args.pad_partial:
        return
    misfits = [f"{layer.name}: {reason}" for kind in args.kind for n in args.n
               for layer in layers if (reason := KINDS[kind].misfit(layer, n))]
    if misfits:
        shown = "; ".join(misfits[:5])
        if len(misfits) > 5:
            shown += f"; ... ({len(misfits)} in all)"
        parser.error(f"--n: {shown}. Pick an N that divides every layer, leave those layers "
                     "out with --layers, or time the zero-padded block with --pad-partial")


# ---- printing --------------------------------------------------------------------
_HEADER = (f"{'layer':<20} {'pass':<11} {'kind':<13} {'backend':<9} {'mf':<4} "
           f"{'sparsity':>8} {'dense_ms':>14} {'sparse_ms':>9} {'speedup':>7} {'ideal':>6} "
           f"{'err':>8}")


def _row(r: dict) -> str:
    mf = "cl" if r["memory_format"] == "channels_last" else "nchw"
    head = (f"{r['layer']:<20} {r['pass']:<11} {kind_label(r):<13} {r['backend']:<9} "
            f"{mf:<4} {r['sparsity']:>8.2f} ")
    dense = f"{r['dense_ms']:.3f} ({'cl' if r['dense_layout'] == 'channels_last' else 'nchw'})"
    if not r["ok"]:
        return head + f"{dense:>14}  FAIL {r['error']}"
    ideal = f"{r['ideal_speedup']:.2f}" if r["ideal_speedup"] else "-"
    return head + (f"{dense:>14} {r['sparse_ms']:>9.3f} {r['speedup']:>6.2f}x {ideal:>6} "
                   f"{r['max_rel_err']:>8.1e}")


def summary(records: list[dict]) -> list[str]:
    """Geometric-mean speed-up over layers per configuration."""
    groups = defaultdict(list)
    for r in records:
        if r["ok"]:
            key = (r["dtype"], r["batch"], r["pass"], kind_label(r), r["backend"],
                   r["memory_format"], r["sparsity"])
            groups[key].append(r["speedup"])
    lines = ["", "geomean speed-up over layers (dense_ms / sparse_ms, >1 = sparse faster)",
             f"{'dtype':<9} {'batch':>5} {'pass':<11} {'kind':<13} {'backend':<9} "
             f"{'mf':<13} {'sparsity':>8} {'layers':>6} {'geomean':>8}"]
    for key, s in sorted(groups.items(), key=lambda kv: str(kv[0])):
        dtype, batch, pass_, kind, backend, mf, sp = key
        geomean = math.exp(sum(map(math.log, s)) / len(s))
        lines.append(f"{dtype:<9} {batch:>5} {pass_:<11} {kind:<13} {backend:<9} "
                     f"{mf:<13} {sp:>8.2f} {len(s):>6} {geomean:>7.2f}x")
    return lines


# ---- entry point -----------------------------------------------------------------
def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Run the sweep; 0 when every configuration ran and passed its check."""
    options.fill_defaults(args, QUICK if args.quick else DEFAULTS)
    suite, layers = _layers(args, parser)
    _check_fit(args, parser, layers)
    device, backends = options.resolve_device(args, parser)
    options.configure_torch(args)
    env = environment(device)
    results = options.open_results(args, parser, env)
    plan = Plan(
        device=device, kinds=options.unique(args.kind), ns=options.unique(args.n),
        sparsities=options.unique(args.sparsity), patterns=options.unique(args.patterns),
        entries=options.unique(args.entries),
        connectivities=options.unique(args.connectivity or ()), backends=backends,
        memory_formats=options.unique(args.memory_format), warmup=args.warmup,
        repeat=args.repeat, seed=args.seed, cache_bytes=cache_bytes(device), rotate=args.rotate,
        tf32=args.tf32)
    passes = options.unique(PASS_ALIASES.get(p, p) for p in args.passes)
    dtypes, batches = options.unique(args.dtype), options.unique(args.batch)
    shared = {**options.run_fields(args, options.command_line(argv)), **env,
              "record_type": "layer", "suite": suite}

    total = configs_per_layer(plan) * len(layers) * len(passes) * len(dtypes) * len(batches)
    bar = tqdm(total=total, unit="cfg") if tqdm else None
    say = bar.write if bar else print
    say(f"# {shared['command']}\n# torch {env['torch_version']} | {device.type} "
        f"{env['device_name']} | threads {env['threads']} | cpu simd {env['cpu_simd']}")
    records, tf32_setting = [], torch.backends.cudnn.allow_tf32  # the TF32 baseline toggles it
    for dtype_name in dtypes:
        dtype = options.DTYPES[dtype_name]
        machine = measure_machine(device, dtype)
        say(f"# {dtype_name}: measured peak {machine.peak_tflops or float('nan'):.3f} TFLOP/s, "
            f"bandwidth {machine.bandwidth_gbs:.1f} GB/s")
        say(_HEADER)
        for batch in batches:
            for pass_ in passes:
                for layer in layers:
                    new = [{**shared, **r} for r in run_layer(plan, layer,
                                                             Case(dtype, batch, pass_, machine))]
                    for r in new:
                        say(_row(r))
                    records += new
                    if results:
                        results.add(new)
                    if bar:
                        bar.update(len(new))
    if bar:
        bar.close()
    torch.backends.cudnn.allow_tf32 = tf32_setting
    for line in summary(records):
        print(line)
    failed = [r for r in records if not r["ok"]]
    if failed:
        print(f"\n{len(failed)} of {len(records)} configurations failed (FAIL above)")
    if results:
        print(f"appended {len(records)} records to {results.path}")
    return 1 if failed else 0
