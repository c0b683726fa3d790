"""``python -m sparsekernels.bench dpp``: a DPPNet layer on its static support
against the dense conv and the training layer.

For each CIFAR conv shape (ResNet-56 / VGG CIFAR: 16, 32, 64 channels at 32,
16, 8 px, 3x3, stride 1, pad 1; or ``--shape``), batch and pass, one run
times side by side, interleaved (``timing.median_ms``, rotating input sets):

* ``dense``: ``nn.Conv2d`` of the same shape (oneDNN), the better of NCHW and
  channels_last;
* ``dpp``: ``DPPConv2d``'s forward (P static convs of ``P*Cout`` outputs and
  the attention-weighted sum: ~P x the dense FLOPs);
* ``support_<mode>``: ``DynamicPatternConv2d`` (``nn.dynamic_pattern``) by
  each path, end to end with its attention: ``mixed`` (per-sample weights on
  U, at stride 1 |U| GEMMs on shifted views of the padded input),
  ``mixed_gather`` (the same weights, input gathered at U's taps, one
  batched GEMM), ``static`` (gather + one GEMM with the P*Cout
  static rows + the sum), ``pconv`` (the P-conv path); ``auto_mode`` says
  which one the module picks by itself.

The layer has P = ``--patterns`` patterns whose union U has ``--taps``
positions (the centre plus a cross of taps, each pattern dropping one of
U's taps, so every pattern differs and U is exactly that set). Each
configuration is first checked against a float64 reference (``max_rel_err``
per path); for the forward pass the mixed path's parts are timed too
(``parts_ms``: attention, weight mix, gather, GEMM of the gather variant;
pad and the shifted GEMMs of the shifted one) to show where time goes.

Records (a JSON list written to ``--out``, overwritten): the run and
environment fields of ``bench layers`` records (``options.run_fields``,
``env.environment``) plus ``record_type`` "dpp" and the fields set in
:func:`measure`; times are medians in ms.
"""
from __future__ import annotations

import argparse
import json
import math

import torch
import torch.nn.functional as F
from torch import nn

from ..atomic_file import atomic_write
from ..flops import count_flops
from ..nn.dynamic_pattern import DynamicPatternConv2d
from ..pruning.dppnet import DPPConv2d
from . import options
from .env import cache_bytes, environment
from .timing import median_ms, rotating, rotation_sets

CIFAR_SHAPES = [(16, 32), (32, 16), (64, 8)]  # (channels, px): ResNet-56 / VGG CIFAR stages
PATHS = ("mixed", "mixed_gather", "static", "pconv")
PASSES = ("forward", "all")
DEFAULTS = {"batch": [8, 64], "warmup": 3, "repeat": 20}
QUICK = {"batch": [2], "warmup": 1, "repeat": 3}
# Flat positions of a 3x3 kernel in the order U takes them (centre, cross, corners).
_ORDER = (4, 1, 3, 5, 7, 0, 2, 6, 8)


def _shape(text: str) -> tuple[int, int]:
    try:
        channels, px = (int(v) for v in text.split(","))
        if channels < 1 or px < 1:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CHANNELS,PX (e.g. 16,32), got {text!r}")
    return channels, px


def add_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "dpp", help="time a DPPNet layer on its static support against dense and P-conv",
        description="Time DynamicPatternConv2d (DPPNet on its union support) against the dense "
                    "conv and DPPConv2d's P-conv forward at CIFAR conv shapes, fp32.")
    p.add_argument("--shape", nargs="+", type=_shape, metavar="CHANNELS,PX",
                   help="Cin=Cout=CHANNELS at PXxPX, 3x3 stride 1 pad 1 (default: 16,32 "
                        "32,16 64,8)")
    p.add_argument("--batch", nargs="+", type=options.positive, help="batch sizes (default 8 64)")
    p.add_argument("--patterns", type=options.positive, default=4, help="P (default 4)")
    p.add_argument("--taps", type=int, default=5, choices=range(1, 10), metavar="{1..9}",
                   help="|U|, positions of the 3x3 kernel any pattern keeps (default 5)")
    p.add_argument("--passes", nargs="+", choices=PASSES, default=["forward"],
                   help="forward: inference under no_grad; all: forward + backward")
    p.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS),
                   help="DynamicPatternConv2d paths to time (default all)")
    p.add_argument("--threads", type=options.positive, default=2, help="torch threads (default 2)")
    p.add_argument("--warmup", type=options.nonnegative, help="untimed rounds (default 3)")
    p.add_argument("--repeat", type=options.positive, help="timed rounds (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-rotate", dest="rotate", action="store_false",
                   help="reuse one input set (caches then flatter small layers)")
    p.add_argument("--quick", action="store_true",
                   help="batch 2, 1 warmup, 3 repeats: checks the command in seconds")
    p.add_argument("--out", required=True, help="JSON file to write the records to")
    p.set_defaults(run=run)
    return p


def dpp_layer(channels: int, num_patterns: int, num_taps: int, seed: int) -> DPPConv2d:
    """A 3x3 DPPConv2d (from a random conv) whose union U has ``num_taps``
    positions; pattern p drops U's tap ``p % |U|`` when |U| > 1."""
    torch.manual_seed(seed)
    conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
    layer = DPPConv2d.from_conv(conv, num_patterns=num_patterns, seed=seed)
    support = list(_ORDER[:num_taps])
    masks = torch.zeros(num_patterns, 9, dtype=torch.bool)
    for p in range(num_patterns):
        masks[p, support] = True
        if num_taps > 1 and num_patterns > 1:
            masks[p, support[p % num_taps]] = False
    with torch.no_grad():
        layer.weight.mul_(masks.view(num_patterns, 1, 1, 3, 3))
        layer.threshold.fill_(1e-9)  # keep exactly the positions whose weights are not zero
    assert int(layer.static_support().sum()) == num_taps
    return layer, conv


def _reference(layer: DPPConv2d, x: torch.Tensor) -> torch.Tensor:
    """float64 per-sample kernels, one sample at a time (the original's math)."""
    layer64 = layer.double()
    x64 = x.double()
    try:
        kernels = torch.einsum("bpo,pochw->bochw", layer64.attention(x64),
                               layer64.weight * layer64.pattern_masks()[:, None, None])
        return torch.cat([F.conv2d(x64[b:b + 1], kernels[b], None, 1, 1)
                          for b in range(x.shape[0])])
    finally:
        layer.float()


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.double() - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


def _call(module: nn.Module, xs: list, pass_: str, grad: torch.Tensor):
    if pass_ == "forward":
        def once(x):
            with torch.no_grad():
                return module(x)
    else:
        def once(x):
            out = module(x)
            out.backward(grad)
            return out
    return rotating([lambda x=x: once(x) for x in xs])


def measure(args, channels: int, px: int, batch: int, pass_: str, device, cache: int) -> dict:
    layer, conv = dpp_layer(channels, args.patterns, args.taps, args.seed)
    modules = {path: DynamicPatternConv2d.from_dpp(layer, mode=path) for path in args.paths}
    auto = DynamicPatternConv2d.from_dpp(layer)
    gen = torch.Generator().manual_seed(args.seed)
    one = torch.randn(batch, channels, px, px, generator=gen)
    sets = rotation_sets(one.numel() * one.element_size(), cache) if args.rotate else 1
    xs = [one] + [torch.randn(one.shape, generator=gen) for _ in range(sets - 1)]
    if pass_ == "all":
        xs = [x.requires_grad_() for x in xs]
    grad = torch.randn(batch, channels, px, px, generator=gen)

    ref = _reference(layer, one.detach())
    errors = {}
    with torch.no_grad():
        for path, module in modules.items():
            errors[path] = _rel_err(module(one), ref)
        errors["dpp"] = _rel_err(layer(one), ref)
    tol = 1e-4
    bad = {k: v for k, v in errors.items() if not v <= tol}

    dense_cl = nn.Conv2d(channels, channels, 3, padding=1, bias=False).to(
        memory_format=torch.channels_last)
    dense_cl.load_state_dict(conv.state_dict())
    xs_cl = [x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(x.requires_grad)
             for x in xs]
    fns = {"dense_nchw": _call(conv, xs, pass_, grad),
           "dense_channels_last": _call(dense_cl, xs_cl, pass_, grad.contiguous(
               memory_format=torch.channels_last)),
           "dpp": _call(layer, xs, pass_, grad),
           **{f"support_{path}": _call(m, xs, pass_, grad) for path, m in modules.items()}}
    ms = median_ms(fns, device, args.warmup, args.repeat)
    parts = _parts(modules.get("mixed"), xs, device, args) if pass_ == "forward" else None

    flop = {metric: batch * count_flops(layer, (channels, px, px), dpp_metric=metric)
            for metric in ("static", "union")}
    dense_flop = batch * count_flops(conv, (channels, px, px))
    factor = 3 if pass_ == "all" else 1
    dense_ms = min(ms["dense_nchw"], ms["dense_channels_last"])
    auto_ms = ms.get(f"support_{auto.resolved_mode()}")
    best_path = min(args.paths, key=lambda p: ms[f"support_{p}"])
    return {
        "record_type": "dpp", "layer": f"3x3_{channels}-{channels}@{px}", "cin": channels,
        "cout": channels, "kh": 3, "kw": 3, "stride": 1, "padding": 1, "hw": px, "out_hw": px,
        "batch": batch, "dtype": "float32", "pass": pass_, "num_patterns": args.patterns,
        "num_taps": args.taps, "taps": auto.taps.tolist(), "rotation_sets": sets,
        "chunk_bytes": auto.chunk_bytes,
        "dense_nchw_ms": ms["dense_nchw"], "dense_channels_last_ms": ms["dense_channels_last"],
        "dense_ms": dense_ms, "dpp_ms": ms["dpp"],
        **{f"support_{p}_ms": ms[f"support_{p}"] for p in args.paths},
        "auto_mode": auto.resolved_mode(), "support_ms": auto_ms, "best_path": best_path,
        "speedup_vs_dense": dense_ms / auto_ms if auto_ms else None,
        "speedup_vs_dpp": ms["dpp"] / auto_ms if auto_ms else None,
        "best_speedup_vs_dense": dense_ms / ms[f"support_{best_path}"],
        "parts_ms": parts,
        "dense_flop": factor * dense_flop, "dpp_static_flop": factor * flop["static"],
        "dpp_union_flop": factor * flop["union"],
        "max_rel_err": errors, "tol": tol, "ok": not bad,
        "error": f"wrong result: {bad}" if bad else None,
    }


def _parts(module, xs, device, args):
    """Forward parts of the mixed paths (whole batch, no chunking), median ms."""
    if module is None:
        return None
    x = xs[0].detach()
    with torch.no_grad():
        attn = module.attention(x)
        by_output = module.kernels.flatten(2).transpose(0, 1).contiguous()
        weights = module.mixed_weights(attn, by_output)
        cols, _, _ = module.gather(x)
        chunk, module.chunk_bytes = module.chunk_bytes, 0
        try:
            fns = {"attention": lambda: module.attention(x),
                   "mix": lambda: module.mixed_weights(attn, by_output),
                   "gather": lambda: module.gather(x),
                   "gather_gemm": lambda: torch.bmm(weights, cols),
                   "pad": lambda: F.pad(x, module._pad),
                   "shifted_gemms_and_mix": lambda: module._mixed_shifted(x, attn)}
            return median_ms(fns, device, args.warmup, args.repeat)
        finally:
            module.chunk_bytes = chunk


_HEADER = (f"{'layer':<16} {'batch':>5} {'pass':<7} {'dense':>8} {'dpp':>8} {'mixed':>8} "
           f"{'m_gath':>8} {'static':>8} {'pconv':>8} {'auto':>6} {'vs dense':>8} {'err':>8}")


def _row(r: dict) -> str:
    def t(key):
        v = r.get(key)
        return f"{v:8.3f}" if v is not None else f"{'-':>8}"
    err = max(r["max_rel_err"].values())
    speed = f"{r['speedup_vs_dense']:.2f}x" if r["speedup_vs_dense"] else "-"
    return (f"{r['layer']:<16} {r['batch']:>5} {r['pass']:<7} {t('dense_ms')} {t('dpp_ms')} "
            f"{t('support_mixed_ms')} {t('support_mixed_gather_ms')} {t('support_static_ms')} "
            f"{t('support_pconv_ms')} "
            f"{r['auto_mode']:>6} {speed:>8} {err:8.1e}" + ("" if r["ok"] else f"  FAIL {r['error']}"))


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, argv: list[str]) -> int:
    for name, value in (QUICK if args.quick else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.taps > 1 and args.patterns > args.taps:
        parser.error(f"--patterns {args.patterns} > --taps {args.taps}: the patterns would repeat")
    device = torch.device("cpu")
    torch.set_num_threads(args.threads)
    env = environment(device)
    shared = {**options.run_fields(args, options.command_line(argv)), **env}
    cache = cache_bytes(device)
    print(f"# {shared['command']}\n# torch {env['torch_version']} | cpu {env['device_name']} | "
          f"threads {env['threads']} | P={args.patterns} |U|={args.taps} (ms, median of "
          f"{args.repeat})")
    print(_HEADER)
    records = []
    for pass_ in options.unique(args.passes):
        for batch in options.unique(args.batch):
            for channels, px in options.unique(args.shape or CIFAR_SHAPES):
                r = {**shared, **measure(args, channels, px, batch, pass_, device, cache)}
                print(_row(r), flush=True)
                records.append(r)
                with atomic_write(args.out, "w") as f:  # rewritten after each: a stop keeps them
                    json.dump(records, f, indent=1, allow_nan=False)
                    f.write("\n")
    ok = [r for r in records if r["ok"]]
    for batch in options.unique(args.batch):
        for pass_ in options.unique(args.passes):
            s = [r["speedup_vs_dense"] for r in ok if r["batch"] == batch and r["pass"] == pass_]
            if s:
                print(f"geomean speed-up vs dense, batch {batch} {pass_}: "
                      f"{math.exp(sum(map(math.log, s)) / len(s)):.2f}x over {len(s)} layers")
    print(f"wrote {len(records)} records to {args.out}")
    return 0 if len(ok) == len(records) else 1
