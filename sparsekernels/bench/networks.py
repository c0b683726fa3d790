"""``python -m sparsekernels.bench networks``: whole models, dense vs sparsified.

For each arch x dtype x batch x mode (eager, and ``torch.compile`` with
``--compile``) the model zoo's network is timed dense and sparsified by every
kind x N x sparsity x backend x memory format, all interleaved in one
:func:`.timing.median_ms` call. Convs the kind cannot or should not prune stay
dense and are timed as part of the network (each record lists them), and the
FLOP reduction (``sparsekernels.flops.count_flops``, dense over sparse) sits
beside the measured speed-up: the gap between the two is the point.

Every model is checked before it is timed: its output on the first input set
against a float64 copy of itself whose sparse convs are decoded to dense ones
(for the dense model: itself in float64). Models are random-initialised: the
weights' values do not change the time.
"""
from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor, nn

from ..flops import count_flops
from ..models import MODELS, get_model
from ..nn.replace import replace_module
from . import options
from .env import cache_bytes, environment
from .kinds import KINDS, RECORD_AREA
from .measure import LAYOUTS, check
from .schema import kind_label
from .timing import median_ms, rotating, rotation_sets

try:
    from tqdm import tqdm
except ImportError:  # the progress bar is optional
    tqdm = None

# Errors compound over tens of layers: looser than the per-layer tolerances.
TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 5e-2, torch.float64: 1e-8}
ARCHS = ("resnet50", "mobilenet_v2", "vgg16_bn", "resnet56")
DEFAULTS = {"arch": list(ARCHS), "batch": [1, 8], "warmup": 2, "repeat": 10}
QUICK = {"arch": ["resnet20"], "batch": [1], "warmup": 1, "repeat": 3}


@dataclass
class Variant:
    """One model to time: the dense one or a sparsified copy."""

    config: dict  # record fields naming it (kind, n, sparsity, backend)
    model: nn.Module
    census: dict  # record fields counting its convs and FLOPs


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "networks", help="time whole networks, dense vs sparsified",
        description="Latency and throughput of model-zoo networks, dense vs sparsified, "
                    "with the FLOP reduction beside the measured speed-up.")
    p.add_argument("--arch", nargs="+", choices=sorted(MODELS),
                   help=f"networks (default: {' '.join(ARCHS)})")
    p.add_argument("--quick", action="store_true",
                   help="resnet20, batch 1, 1 warmup, 3 repeats: runs in seconds")
    options.add_sweep_options(p, DEFAULTS)
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd models (slow to compile on CPU)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB",
                   help="conv names to keep dense")
    p.add_argument("--dense-stem", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the first conv dense (3 input channels), as pruning papers do")
    p.add_argument("--pad-partial", action=argparse.BooleanOptionalAction, default=True,
                   help="pad the last block row where N does not divide a conv's "
                        "out_channels; --no-pad-partial leaves such convs dense")
    p.set_defaults(run=run)
    return p


# ---- models ----------------------------------------------------------------------
def _census(model: nn.Module, kind, input_shape, dense_flops: int, convs: int) -> dict:
    sparse_type = kind.module if kind else ()
    flops = count_flops(model, input_shape)
    return {
        "convs": convs,
        "sparse_convs": sum(isinstance(m, sparse_type) for m in model.modules()),
        "dense_convs": [name for name, m in model.named_modules() if type(m) is nn.Conv2d],
        "flops": flops, "dense_flops": dense_flops, "flop_reduction": dense_flops / flops,
    }


def _variants(args, arch: str, dtype: torch.dtype, device, backends) -> tuple[list, list[str]]:
    """The dense model and its sparsified copies, and the conv globs kept dense."""
    torch.manual_seed(args.seed)
    dense = get_model(arch).eval().to(device, dtype)
    input_shape = MODELS[arch].input_shape
    conv_names = [name for name, m in dense.named_modules() if type(m) is nn.Conv2d]
    exclude = list(args.exclude) + (conv_names[:1] if args.dense_stem else [])
    dense_flops = count_flops(dense, input_shape)
    none = {"n": None, "patterns": None, "entries": None, "connectivity": None}
    variants = [Variant({"kind": None, **none, "sparsity": 0.0, "backend": None}, dense,
                        _census(dense, None, input_shape, dense_flops, len(conv_names)))]
    for kind_name in options.unique(args.kind):
        kind = KINDS[kind_name]
        settings = kind.settings(options.unique(args.n), options.unique(args.patterns),
                                 options.unique(args.entries))
        levels = kind.levels(options.unique(args.sparsity),
                             options.unique(args.connectivity or ()))
        for setting in settings:
            for level in levels:
                fields = kind.record_fields(setting, level, RECORD_AREA)
                for backend in backends:
                    model = kind.sparsify(copy.deepcopy(dense), setting, level, exclude,
                                          args.pad_partial, args.seed, backend)
                    census = _census(model, kind, input_shape, dense_flops, len(conv_names))
                    variants.append(Variant({"kind": kind_name, **fields, "backend": backend},
                                            model, census))
    return variants, exclude


def _reference(variant: Variant) -> nn.Module:
    """float64 copy with every sparse conv decoded to a dense nn.Conv2d."""
    ref = copy.deepcopy(variant.model)
    kind = variant.config["kind"]
    if kind:
        for name, m in list(ref.named_modules()):
            if isinstance(m, KINDS[kind].module):
                replace_module(ref, name, m.to_dense())
    return ref.double()


def _in_layout(model: nn.Module, layout: str) -> nn.Module:
    """A copy whose dense convs' weights are in ``layout`` (sparse weights have their own)."""
    if layout == "nchw":
        return model
    model = copy.deepcopy(model)
    for m in model.modules():
        if type(m) is nn.Conv2d:
            m.weight.data = m.weight.data.contiguous(memory_format=LAYOUTS[layout])
    return model


# ---- one (arch, dtype, batch) ------------------------------------------------------
def _inputs(args, arch, dtype, batch, device) -> dict[str, list[Tensor]]:
    """Rotated input batches, per layout."""
    gen = torch.Generator().manual_seed(args.seed)
    shape = (batch, *MODELS[arch].input_shape)
    sets = args.rotate or rotation_sets(math.prod(shape) * dtype.itemsize, cache_bytes(device))
    xs = [torch.randn(*shape, generator=gen).to(device, dtype) for _ in range(sets)]
    return {name: [x.contiguous(memory_format=fmt) for x in xs] for name, fmt in LAYOUTS.items()}


def _time_mode(args, variants, wants, inputs, mode: str, shared: dict, device) -> list[dict]:
    """Check, then time, every variant in one mode; one record per variant and layout
    (of the dense model only the faster layout is kept, unless it failed)."""
    steps, checked = {}, []
    for i, (variant, want) in enumerate(zip(variants, wants)):
        layouts = LAYOUTS if variant.config["kind"] is None else args.memory_format
        for layout in options.unique(layouts):
            model = _in_layout(variant.model, layout)
            run = torch.compile(model, dynamic=False) if mode == "compiled" else model
            rec = {**shared, **variant.config, **variant.census, "mode": mode,
                   "memory_format": layout, "rotation_sets": len(inputs[layout]),
                   "max_rel_err": None, "tol": TOLERANCE[options.DTYPES[shared["dtype"]]],
                   "ok": False, "error": None}
            if check(rec, lambda: [run(inputs[layout][0])], want):  # compiles, if compiled
                steps[(i, layout)] = rotating([partial(run, x) for x in inputs[layout]])
            checked.append(((i, layout), rec))
    times = median_ms(steps, device, args.warmup, args.repeat)
    dense = {layout: ms for (i, layout), ms in times.items() if variants[i].config["kind"] is None}
    best = min(dense, key=dense.__getitem__, default=None)
    records = []
    for key, rec in checked:
        if rec["kind"] is None and rec["ok"] and key[1] != best:
            continue
        latency = times.get(key)
        rec.update(latency_ms=latency, dense_latency_ms=dense.get(best), dense_layout=best,
                   throughput_ips=None, speedup=None)
        if latency is not None:
            rec["throughput_ips"] = rec["batch"] * 1e3 / latency
            rec["speedup"] = rec["dense_latency_ms"] / latency if best else None
        records.append(rec)
    return records


def run_network(args, arch: str, dtype: torch.dtype, batch: int, device, backends,
                shared: dict) -> list[dict]:
    """Every variant of one network at one dtype and batch, in every mode."""
    variants, exclude = _variants(args, arch, dtype, device, backends)
    inputs = _inputs(args, arch, dtype, batch, device)
    shared = {**shared, "arch": arch, "input_shape": list(MODELS[arch].input_shape),
              "batch": batch, "dtype": str(dtype).removeprefix("torch."), "exclude": exclude}
    records = []
    modes = ("eager", "compiled") if args.compile else ("eager",)
    # Every compiled variant is one more dynamo cache entry of the same forward code.
    limit = len(variants) * (len(LAYOUTS) + len(args.memory_format)) + 8
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=limit):
        x64 = inputs["nchw"][0].double()
        wants = [[_reference(v)(x64)] for v in variants]
        for mode in modes:
            torch._dynamo.reset()
            records += _time_mode(args, variants, wants, inputs, mode, shared, device)
    return records


# ---- printing and entry point ------------------------------------------------------
_HEADER = (f"{'arch':<13} {'dtype':<9} {'batch':>5} {'mode':<8} {'config':<24} {'mf':<4} "
           f"{'latency_ms':>10} {'img/s':>8} {'speedup':>7} {'flop_red':>8} {'convs':>7}")


def _row(r: dict) -> str:
    config = "dense" if r["kind"] is None else \
        f"{kind_label(r)} s={r['sparsity']:.2f} {r['backend']}"
    mf = "cl" if r["memory_format"] == "channels_last" else "nchw"
    head = f"{r['arch']:<13} {r['dtype']:<9} {r['batch']:>5} {r['mode']:<8} {config:<24} {mf:<4} "
    convs = f"{r['sparse_convs']}/{r['convs']}"
    if not r["ok"]:
        return head + f"FAIL {r['error']}"
    return head + (f"{r['latency_ms']:>10.3f} {r['throughput_ips']:>8.1f} {r['speedup']:>6.2f}x "
                   f"{r['flop_reduction']:>7.2f}x {convs:>7}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Run the sweep; 0 when every model ran and passed its check."""
    options.fill_defaults(args, QUICK if args.quick else DEFAULTS)
    device, backends = options.resolve_device(args, parser)
    options.configure_torch(args)
    env = environment(device)
    results = options.open_results(args, parser, env)
    shared = {**options.run_fields(args, options.command_line(argv)), **env,
              "record_type": "network"}
    archs, dtypes, batches = (options.unique(v) for v in (args.arch, args.dtype, args.batch))
    bar = tqdm(total=len(archs) * len(dtypes) * len(batches), unit="net") if tqdm else None
    say = bar.write if bar else print
    say(f"# {shared['command']}\n# torch {env['torch_version']} | {device.type} "
        f"{env['device_name']} | threads {env['threads']}")
    say(_HEADER)
    records = []
    for arch in archs:
        for dtype_name in dtypes:
            for batch in batches:
                new = run_network(args, arch, options.DTYPES[dtype_name], batch, device,
                                  backends, shared)
                for r in new:
                    say(_row(r))
                records += new
                if results:
                    results.add(new)
                if bar:
                    bar.update()
    if bar:
        bar.close()
    failed = [r for r in records if not r["ok"]]
    if failed:
        print(f"\n{len(failed)} of {len(records)} models failed (FAIL above)")
    if results:
        print(f"appended {len(records)} records to {results.path}")
    return 1 if failed else 0
