"""``python -m sparsekernels.bench networks``: whole models, dense vs sparsified.

For each arch x dtype x batch x mode (eager, and ``torch.compile`` with
``--compile``) the model zoo's network is timed dense and sparsified by every
kind x N x sparsity x backend x memory format, all interleaved in one
:func:`.latency.median_forward_ms` call. Convs the kind cannot or should not
prune stay dense and are timed as part of the network (each record lists
them), and the FLOP reduction (``sparsekernels.flops.count_flops``, dense
over sparse) sits beside the measured speed-up: the gap between the two is
the point. ``--model PATH`` times an exported model (``python -m
sparsekernels export``) instead, against its unpruned architecture
(``latency.unpruned``), as ``prune`` and ``export`` do.

In eager mode on the CPU at float32 the dense model also runs under ONNX
Runtime (``--no-ort`` skips it; so does a missing onnxruntime, with one line
saying so): each record's ``speedup`` is against the faster dense baseline,
``dense_engine`` says which.

Every model is checked before it is timed: its output on the first input set
against a float64 copy of itself whose sparse convs are decoded to dense ones
(for the dense model: itself in float64). Zoo models are random-initialised:
the weights' values do not change the time.
"""
from __future__ import annotations

import argparse
import copy
import importlib.metadata
import subprocess
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor, nn

from ..flops import count_flops
from ..activation import DenseEpilogue
from ..cpu_allocator import keep_freed_memory
from ..fold_bn import fold_batchnorm
from ..fuse_epilogue import fuse_epilogues
from ..models import MODELS, get_model
from ..nn.base import SparseConv2d
from ..nn.nchw_kernels import NchwConv2d, use_nchw_kernels
from ..nn.dynamic_pattern import DynamicPatternConv2d
from ..nn.replace import replace_module
from ..train.artifacts import config_of, read_record
from ..train.export import load_exported, sparse_layers_of, sparsity_by_kind
from . import options
from .env import environment
from .kinds import KINDS, RECORD_AREA
from .latency import (input_sets, median_forward_ms, onnxruntime_forward, onnxruntime_missing,
                      unpruned)
from .measure import LAYOUTS, check
from .schema import kind_label

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
    """One model to time: the dense one (in PyTorch or ONNX Runtime), a
    sparsified copy, or the saved model of ``--model``."""

    config: dict  # record fields naming it (kind, n, sparsity, backend)
    model: nn.Module  # what runs, or for another engine the model it runs
    census: dict  # record fields counting its convs and FLOPs
    engine: str = "pytorch"
    engine_version: str = torch.__version__
    forward: Optional[Callable[[Tensor], Tensor]] = None  # another engine's run of ``model``


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "networks", help="time whole networks, dense vs sparsified",
        description="Latency and throughput of model-zoo networks, dense vs sparsified, "
                    "with the FLOP reduction beside the measured speed-up.")
    p.add_argument("--arch", nargs="+", choices=sorted(MODELS),
                   help=f"networks (default: {' '.join(ARCHS)})")
    p.add_argument("--model", metavar="PATH",
                   help="an exported model (python -m sparsekernels export): time it against "
                        "its unpruned architecture instead of sparsifying zoo networks (--arch, "
                        "--kind and the sparsity options do not apply)")
    p.add_argument("--quick", action="store_true",
                   help="resnet20, batch 1, 1 warmup, 3 repeats: runs in seconds")
    p.add_argument("--ort", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the dense model under ONNX Runtime (CPU, float32, eager), "
                        "a second dense baseline (default on)")
    options.add_sweep_options(p, DEFAULTS)
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd models (slow to compile on CPU)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="GLOB",
                   help="conv names to keep dense")
    p.add_argument("--dense-stem", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the first conv dense (3 input channels), as pruning papers do")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold eval-mode BatchNorm into the conv before it "
                        "(sparsekernels.fold_batchnorm) in every PyTorch model, dense and "
                        "sparse alike, as ONNX Runtime does for its dense run (default on)")
    p.add_argument("--nchw-kernels", action=argparse.BooleanOptionalAction, default=True,
                   help="run the sparse models' (dense) depthwise convs, dense convs on the "
                        "image (the stem) and max pools on the library's NCHW kernels "
                        "(sparsekernels.nn.use_nchw_kernels) (default on)")
    p.add_argument("--fuse-epilogues", action=argparse.BooleanOptionalAction, default=True,
                   help="run the ReLU / ReLU6 after each sparse or NCHW-kernel conv in "
                        "the conv's epilogue (sparsekernels.fuse_epilogues, after --fold-bn), "
                        "as ONNX Runtime fuses its dense convs' (default on)")
    p.add_argument("--keep-freed-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="have malloc keep freed memory for reuse in this process "
                        "(sparsekernels.keep_freed_memory), so the PyTorch models, dense and "
                        "sparse, do not page-fault their large activations in again every "
                        "forward, as ONNX Runtime's arena does not (default on)")
    p.add_argument("--pad-partial", action=argparse.BooleanOptionalAction, default=True,
                   help="pad the last block row where N does not divide a conv's "
                        "out_channels; --no-pad-partial leaves such convs dense")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=True,
                   help="run each --arch in a fresh process, one after the other, so that "
                        "one network's memory, caches and thread pools do not colour the "
                        "next one's times (default on)")
    # A child of --isolate: its one architecture, and the command line its records name.
    p.add_argument("--only-arch", help=argparse.SUPPRESS)
    p.add_argument("--recorded-command", help=argparse.SUPPRESS)
    p.set_defaults(run=run)
    return p


# ---- models ----------------------------------------------------------------------
def _census(model: nn.Module, input_shape, dense_flops: int, convs: int) -> dict:
    flops = count_flops(model, input_shape)
    return {
        "convs": convs,
        "sparse_convs": sum(isinstance(m, (SparseConv2d, DynamicPatternConv2d))
                            for m in model.modules()),
        "dense_convs": [name for name, m in model.named_modules() if type(m) is nn.Conv2d],
        "flops": flops, "dense_flops": dense_flops, "flop_reduction": dense_flops / flops,
    }


_NO_KIND = {"kind": None, "n": None, "patterns": None, "entries": None, "connectivity": None,
            "sparsity": 0.0, "backend": None}


def _variants(args, arch: str, dtype: torch.dtype, device, backends,
              saved: Optional[dict]) -> tuple[list, list[str]]:
    """The dense model (and its ONNX Runtime run) and the models timed against
    it: sparsified copies, or ``saved``'s model; and the conv globs kept dense."""
    torch.manual_seed(args.seed)
    input_shape = MODELS[arch].input_shape
    dense = (unpruned(arch, saved["num_classes"]) if saved else get_model(arch)).eval()
    dense = dense.to(device, dtype)
    convs = sum(type(m) is nn.Conv2d for m in dense.modules())
    dense_flops = count_flops(dense, input_shape)
    census = _census(dense, input_shape, dense_flops, convs)
    variants = [Variant(dict(_NO_KIND), dense, census)]
    if args.ort and device.type == "cpu" and dtype == torch.float32:
        variants.append(Variant(dict(_NO_KIND), dense, census, "onnxruntime",
                                *_onnxruntime(dense, arch)))
    if saved:
        for backend in backends:
            model = load_exported(args.model, backend).eval().to(device, dtype)
            config = {**_saved_config(saved, model), "backend": backend}
            variants.append(Variant(config, model,
                                    _census(model, input_shape, dense_flops, convs)))
        cfg = config_of(saved)
        return _folded(args, variants), list(cfg.exclude) if cfg else []
    conv_names = [name for name, m in dense.named_modules() if type(m) is nn.Conv2d]
    exclude = list(args.exclude) + (conv_names[:1] if args.dense_stem else [])
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
                    variants.append(Variant(
                        {"kind": kind_name, **fields, "backend": backend}, model,
                        _census(model, input_shape, dense_flops, convs)))
    return _folded(args, variants), exclude


def _folded(args, variants: list) -> list:
    """``variants`` with BN folded into every PyTorch model (--fold-bn), and
    in the sparse ones the depthwise convs, image convs and max pools on the NCHW kernels
    (--nchw-kernels) and activations fused into the convs before them
    (--fuse-epilogues): after sparsifying, so the masks are those of the
    model as trained."""
    for v in variants:
        if v.forward is None and args.fold_bn:
            fold_batchnorm(v.model)
        if v.forward is not None or v.config["kind"] is None:
            continue
        if args.nchw_kernels:
            use_nchw_kernels(v.model)
        if args.fuse_epilogues:
            v.model = fuse_epilogues(v.model)
    return variants


def _onnxruntime(dense: nn.Module, arch: str) -> tuple[str, Callable[[Tensor], Tensor]]:
    """ONNX Runtime's version and its forward of ``dense``; a model it cannot
    export or load gets a forward raising why, which its check records."""
    try:
        forward, version = onnxruntime_forward(dense, arch, torch.get_num_threads())
        return version, forward
    except Exception as exc:  # noqa: BLE001 -- an op the exporter or ONNX Runtime lacks
        def failing(x: Tensor, exc=exc) -> Tensor:
            raise exc
        return importlib.metadata.version("onnxruntime"), failing


def _saved_config(record: dict, model: nn.Module) -> dict:
    """Record fields naming an exported model: its sparse layers' kind (the
    method's name when it has none) and parameters, and as ``sparsity`` the
    fraction of its conv and linear weights that are zero."""
    layers = sparse_layers_of(record)
    kinds = {spec.label for spec, _ in layers.values()}
    kind = kinds.pop() if kinds else record.get("method", "dense")
    params = next(iter(layers.values()))[1] if layers else {}
    cfg = config_of(record)
    patterned = kind == "pattern" and cfg is not None
    counts = sparsity_by_kind(model).values()
    zeros = sum(c["sparsity"] * c["weights"] for c in counts)
    return {"kind": kind, "n": params.get("n"),
            "patterns": cfg.num_patterns if patterned else None,
            "entries": cfg.pattern_entries if patterned else None, "connectivity": None,
            "sparsity": zeros / sum(c["weights"] for c in counts)}


def _reference(variant: Variant) -> nn.Module:
    """float64 copy with every sparse conv decoded to a dense nn.Conv2d, and
    every NchwConv2d a plain one (each with its fused activation)."""
    ref = copy.deepcopy(variant.model)
    for name, m in list(ref.named_modules()):
        if isinstance(m, (SparseConv2d, NchwConv2d)):
            replace_module(ref, name, DenseEpilogue(m.to_dense(), m.activation))
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
    xs = input_sets((batch, *MODELS[arch].input_shape), dtype, device, args.seed, args.rotate)
    return {name: [x.contiguous(memory_format=fmt) for x in xs] for name, fmt in LAYOUTS.items()}


def _runs(args, variant: Variant, mode: str):
    """(layout, forward) pairs to time of one variant in ``mode``: another
    engine in eager mode only, on NCHW; the dense model in both layouts."""
    if variant.forward is not None:
        return [("nchw", variant.forward)] if mode == "eager" else []
    layouts = LAYOUTS if variant.config["kind"] is None else args.memory_format
    runs = []
    for layout in options.unique(layouts):
        model = _in_layout(variant.model, layout)
        runs.append((layout, torch.compile(model, dynamic=False) if mode == "compiled" else model))
    return runs


def _time_mode(args, variants, wants, inputs, mode: str, shared: dict, device) -> list[dict]:
    """Check, then time, every variant in one mode; one record per variant and layout
    (of the PyTorch dense model only the faster layout is kept, unless it failed)."""
    forwards, checked = {}, []
    for i, (variant, want) in enumerate(zip(variants, wants)):
        for layout, run in _runs(args, variant, mode):
            rec = {**shared, **variant.config, **variant.census, "mode": mode,
                   "engine": variant.engine, "engine_version": variant.engine_version,
                   "model_file": args.model, "memory_format": layout,
                   "rotation_sets": len(inputs[layout]), "max_rel_err": None,
                   "tol": TOLERANCE[options.DTYPES[shared["dtype"]]], "ok": False, "error": None}
            if check(rec, lambda: [run(inputs[layout][0])], want):  # compiles, if compiled
                forwards[(i, layout)] = run
            checked.append(((i, layout), rec))
    times = median_forward_ms(forwards, {key: inputs[key[1]] for key in forwards}, device,
                              args.warmup, args.repeat)
    dense = {key: ms for key, ms in times.items() if variants[key[0]].config["kind"] is None}
    torch_dense = [key for key in dense if variants[key[0]].engine == "pytorch"]
    torch_best = min(torch_dense, key=dense.__getitem__, default=None)
    best = min(dense, key=dense.__getitem__, default=None)  # the faster dense baseline
    records = []
    for key, rec in checked:
        if key in torch_dense and key != torch_best:
            continue
        latency = times.get(key)
        rec.update(latency_ms=latency, dense_latency_ms=dense.get(best), dense_layout=None,
                   dense_engine=None, throughput_ips=None, speedup=None)
        if best:
            rec.update(dense_layout=best[1], dense_engine=variants[best[0]].engine)
        if latency is not None:
            rec["throughput_ips"] = rec["batch"] * 1e3 / latency
            rec["speedup"] = rec["dense_latency_ms"] / latency if best else None
        records.append(rec)
    return records


def run_network(args, arch: str, dtype: torch.dtype, batch: int, device, backends,
                shared: dict, saved: Optional[dict] = None) -> list[dict]:
    """Every variant of one network at one dtype and batch, in every mode."""
    variants, exclude = _variants(args, arch, dtype, device, backends, saved)
    inputs = _inputs(args, arch, dtype, batch, device)
    shared = {**shared, "arch": arch, "input_shape": list(MODELS[arch].input_shape),
              "batch": batch, "dtype": str(dtype).removeprefix("torch."), "exclude": exclude,
              "fold_bn": bool(args.fold_bn), "fuse_epilogues": bool(args.fuse_epilogues),
              "nchw_kernels": bool(args.nchw_kernels),
              "keep_freed_memory": bool(args.keep_freed_memory)}
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
    config = f"{kind_label(r)} s={r['sparsity']:.2f} {r['backend']}"
    if r["kind"] is None:
        config = "dense" if r["engine"] == "pytorch" else f"dense {r['engine']}"
    mf = "cl" if r["memory_format"] == "channels_last" else "nchw"
    head = f"{r['arch']:<13} {r['dtype']:<9} {r['batch']:>5} {r['mode']:<8} {config:<24} {mf:<4} "
    convs = f"{r['sparse_convs']}/{r['convs']}"
    if not r["ok"]:
        return head + f"FAIL {r['error']}"
    return head + (f"{r['latency_ms']:>10.3f} {r['throughput_ips']:>8.1f} {r['speedup']:>6.2f}x "
                   f"{r['flop_reduction']:>7.2f}x {convs:>7}")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Run the sweep; 0 when every model ran and passed its check."""
    if args.model and args.arch:
        parser.error("--model: times the file's own architecture; drop --arch")
    options.fill_defaults(args, QUICK if args.quick else DEFAULTS)
    device, backends = options.resolve_device(args, parser)
    saved = _saved(args, parser)
    archs = [saved["arch"]] if saved else options.unique(args.arch)
    if args.only_arch:
        archs = [args.only_arch]
    elif args.isolate and len(archs) > 1:
        return _run_isolated(argv, archs)
    options.configure_torch(args)
    env = environment(device)
    results = options.open_results(args, parser, env)
    command = args.recorded_command or options.command_line(argv)
    shared = {**options.run_fields(args, command), **env, "record_type": "network"}
    dtypes, batches = options.unique(args.dtype), options.unique(args.batch)
    bar = tqdm(total=len(archs) * len(dtypes) * len(batches), unit="net") if tqdm else None
    say = bar.write if bar else print
    say(f"# {shared['command']}\n# torch {env['torch_version']} | {device.type} "
        f"{env['device_name']} | threads {env['threads']}")
    if args.ort:
        args.ort = _ort_usable(args, device, say)
    if args.keep_freed_memory and not keep_freed_memory():
        say("# --keep-freed-memory: needs glibc's malloc; the models run with this "
            "C library's defaults")
        args.keep_freed_memory = False
    say(_HEADER)
    records = []
    for arch in archs:
        for dtype_name in dtypes:
            for batch in batches:
                new = run_network(args, arch, options.DTYPES[dtype_name], batch, device,
                                  backends, shared, saved)
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


def _run_isolated(argv: list[str], archs: list[str]) -> int:
    """Each architecture by a child process (this command, that one arch), in
    order, appending to the same --json file; the records name this command.
    The dense PyTorch models ran up to ~12% slower after another network in
    the same process than alone (benchmarks/cpu_1xn_kernels.md)."""
    codes = [subprocess.run([sys.executable, "-m", "sparsekernels.bench", *argv,
                             "--only-arch", arch, "--recorded-command",
                             options.command_line(argv)], check=False).returncode
             for arch in archs]
    return 1 if any(codes) else 0


def _saved(args, parser) -> Optional[dict]:
    """``--model``'s record, after checking the model loads (None without --model)."""
    if not args.model:
        return None
    try:
        record = read_record(args.model)
        load_exported(args.model)
    except (OSError, ValueError) as exc:
        parser.error(f"--model: expected a model written by 'python -m sparsekernels export': "
                     f"{exc}")
    return record


def _ort_usable(args, device, say) -> bool:
    """Whether the ONNX Runtime baseline runs; one line says why not where it cannot."""
    missing = onnxruntime_missing()
    if missing:
        say(f"# {missing}")
        return False
    if device.type != "cpu":
        say(f"# ONNX Runtime dense baseline: runs on the CPU only, skipped on {device.type}")
        return False
    others = [d for d in options.unique(args.dtype) if d != "float32"]
    if others:
        say(f"# ONNX Runtime dense baseline: float32 only, skipped at {', '.join(others)}")
    return True
