"""One layer of the benchmark: data, sparse formats, correctness gate, timing, records.

For one (layer, dtype, batch, pass) every sparse configuration (kind x N x
sparsity x backend x memory format) is first checked against a float64 dense
conv on its decoded weight; a configuration that raises or whose error exceeds
the tolerance is recorded as failed and never timed. The rest are timed
interleaved with the dense conv in both memory formats (and, for fp32 on CUDA,
with TF32 on as well; for an fp16/bf16 forward on CUDA, with cuSPARSELt 2:4
as the vendor's sparse peer), each callable cycling through its own input sets.
Formats and their topology are built before any timing.

Passes: ``forward``; ``grad-input`` / ``grad-weight``, the backward op alone
(the forward graph is built untimed, then only ``autograd.grad`` to the input
or to the weight runs); ``all``, forward and both gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import semi_structured
from .kinds import KINDS, Kind
from .roofline import Machine, conv_flop, fraction, ideal_speedup
from .suites import Layer
from .timing import median_ms, rotating, rotation_sets

# max|err| / max|ref| above which a configuration is flagged.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-10}
# pass -> (gradient to the input?, gradient to the weight?)
PASSES = {"forward": (False, False), "grad-input": (True, False),
          "grad-weight": (False, True), "all": (True, True)}
CONVS_PER_PASS = {"forward": 1, "grad-input": 1, "grad-weight": 1, "all": 3}
LAYOUTS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}


@dataclass(frozen=True)
class Plan:
    """What to run on every layer (resolved from the command line)."""

    device: torch.device
    kinds: tuple[str, ...]
    ns: tuple[int, ...]
    sparsities: tuple[float, ...]
    patterns: tuple[int, ...]  # pattern: library sizes
    entries: tuple[int, ...]  # pattern: kept positions per kernel
    connectivities: tuple[float, ...]  # pattern: kernels dropped (replaces sparsities)
    backends: tuple[str, ...]
    memory_formats: tuple[str, ...]  # of the sparse conv's input
    warmup: int
    repeat: int
    seed: int
    cache_bytes: int  # sizes the input rotation...
    rotate: Optional[int]  # ...unless the user fixed the number of input sets
    tf32: bool  # also time the dense fp32 conv with TF32 (CUDA)


@dataclass(frozen=True)
class Case:
    """One (dtype, batch, pass) a layer runs at, with the machine's peaks."""

    dtype: torch.dtype
    batch: int
    pass_: str
    machine: Machine


class InputSet:
    """One input (and grad_out for backward passes) in both memory formats."""

    def __init__(self, x: Tensor, grad_out: Optional[Tensor], needs_x_grad: bool):
        self.by_layout = {}
        for name, fmt in LAYOUTS.items():
            xl = x.contiguous(memory_format=fmt).requires_grad_(needs_x_grad)
            gl = None if grad_out is None else grad_out.contiguous(memory_format=fmt)
            self.by_layout[name] = (xl, gl)


def _input_sets(layer: Layer, case: Case, plan: Plan) -> tuple[Tensor, list[InputSet]]:
    """The dense weight (~unit-variance output) and the rotated input sets."""
    gen = torch.Generator().manual_seed(plan.seed)

    def randn(*shape, scale=1.0):  # drawn on the CPU: every device sees the same numbers
        return (torch.randn(*shape, generator=gen) * scale).to(plan.device, case.dtype)

    needs_x, needs_w = PASSES[case.pass_]
    w = randn(layer.cout, layer.cin, layer.k, layer.k, scale=(layer.cin * layer.k ** 2) ** -0.5)
    x_shape = (case.batch, layer.cin, layer.hw, layer.hw)
    y_shape = (case.batch, layer.cout, layer.out_hw, layer.out_hw)
    backward = needs_x or needs_w
    set_bytes = (math.prod(x_shape) + math.prod(y_shape) * (2 if backward else 1)) * w.itemsize
    sets = [
        InputSet(randn(*x_shape), randn(*y_shape) if backward else None, needs_x)
        for _ in range(plan.rotate or rotation_sets(set_bytes, plan.cache_bytes))
    ]
    return w.requires_grad_(needs_w), sets


def pass_call(pass_: str, forward: Callable[[Tensor], Tensor], x: Tensor, weight: Tensor,
              grad_out: Optional[Tensor]) -> Callable[[], object]:
    """The timed work of one pass on one input set."""
    if pass_ == "forward":
        return partial(forward, x)
    if pass_ == "all":
        return lambda: torch.autograd.grad(forward(x), (x, weight), grad_out)
    out = forward(x)  # untimed: only the backward op is measured
    wrt = x if pass_ == "grad-input" else weight
    return lambda: torch.autograd.grad(out, wrt, grad_out, retain_graph=True)


def pass_outputs(pass_: str, forward: Callable[[Tensor], Tensor], x: Tensor, weight: Tensor,
                 grad_out: Optional[Tensor]) -> list[Tensor]:
    """What one pass computes: output and/or gradients, for the correctness check."""
    out = forward(x)
    needs_x, needs_w = PASSES[pass_]
    wrt = [t for t, needed in ((x, needs_x), (weight, needs_w)) if needed]
    grads = list(torch.autograd.grad(out, wrt, grad_out)) if wrt else []
    return ([out] if pass_ in ("forward", "all") else []) + grads


def _conv(layer: Layer, x: Tensor, w: Tensor) -> Tensor:
    return F.conv2d(x, w, None, layer.stride, layer.padding)


def _with_tf32(enabled: bool, call: Callable[[], object]) -> Callable[[], object]:
    """Run ``call`` with cuDNN TF32 on or off (read at dispatch, so set per call)."""
    def run():
        torch.backends.cudnn.allow_tf32 = enabled
        return call()
    return run


def _dense_steps(layer: Layer, case: Case, plan: Plan, w: Tensor, sets: list[InputSet]) -> dict:
    """Timed dense callables, keyed ``(layout, tf32)``."""
    tf32_options = (False,)
    if plan.device.type == "cuda" and case.dtype == torch.float32 and plan.tf32:
        tf32_options = (False, True)
    steps = {}
    for layout, fmt in LAYOUTS.items():
        wl = w.detach().contiguous(memory_format=fmt).requires_grad_(w.requires_grad)
        forward = partial(_conv, layer, w=wl)
        calls = [pass_call(case.pass_, forward, x, wl, g)
                 for x, g in (s.by_layout[layout] for s in sets)]
        for tf32 in tf32_options:
            step = rotating(calls)
            steps[(layout, tf32)] = _with_tf32(tf32, step) if plan.device.type == "cuda" else step
    return steps


def _peer_steps(layer: Layer, case: Case, plan: Plan, w: Tensor, sets: list[InputSet]) -> dict:
    """cuSPARSELt 2:4 (see semi_structured.py), keyed ``("2:4", "conv" |
    "gemm")``, where it runs and its conv matches F.conv2d on its own 2:4
    weight; else nothing (the records say null)."""
    if not semi_structured.runs_on(plan.device, case.dtype, case.pass_):
        return {}
    pruned, conv, gemm = semi_structured.peer(layer, w)
    x0 = sets[0].by_layout["nchw"][0]
    want = _conv(layer, x0.detach().double(), pruned.double())
    err = max_rel_err([conv(x0.detach())], [want])
    if not err <= TOLERANCE[case.dtype]:
        print(f"# {layer.name}: cuSPARSELt 2:4 peer left out (max relative error {err:.2e})")
        return {}
    xs = [s.by_layout["nchw"][0].detach() for s in sets]
    cols = [semi_structured.im2col(layer, x) for x in xs]
    return {("2:4", "conv"): rotating([partial(conv, x) for x in xs]),
            ("2:4", "gemm"): rotating([partial(gemm, c) for c in cols])}


def _reference(kind: Kind, fmt, layer: Layer, pass_: str, inputs: InputSet) -> list[Tensor]:
    """float64 dense conv on the decoded weight, on the first input set."""
    x, grad_out = inputs.by_layout["nchw"]
    needs_x, needs_w = PASSES[pass_]
    x64 = x.detach().double().requires_grad_(needs_x)
    w64 = fmt.to_dense().detach().double().requires_grad_(needs_w)
    g64 = None if grad_out is None else grad_out.double()
    outs = pass_outputs(pass_, partial(_conv, layer, w=w64), x64, w64, g64)
    if needs_w:  # the weight gradient, as the kind's parameter holds it
        outs[-1] = kind.param_grad(fmt, outs[-1])
    return outs


def max_rel_err(got: list[Tensor], want: list[Tensor]) -> float:
    """Worst max|got - want| / max|want| over the compared tensors (NaN if any is)."""
    errs = []
    for g, w in zip(got, want, strict=True):
        scale = max(w.abs().max().item(), torch.finfo(torch.float64).tiny)
        errs.append((g.detach().double() - w).abs().max().item() / scale)
    return math.nan if any(map(math.isnan, errs)) else max(errs)


def check(rec: dict, run: Callable[[], list[Tensor]], want: list[Tensor]) -> bool:
    """Fill ``rec``'s error fields from one run against ``want``; True if correct."""
    try:
        err = max_rel_err(run(), want)
    except Exception as exc:  # noqa: BLE001 -- a kernel may reject a shape or run out of memory
        rec["error"] = f"{type(exc).__name__}: {exc}"
        return False
    if math.isnan(err):
        rec["error"] = "wrong result: NaN in the output"
        return False
    rec["max_rel_err"] = err
    if err > rec["tol"]:
        rec["error"] = f"wrong result: max relative error {err:.2e} > tolerance {rec['tol']:.0e}"
        return False
    rec["ok"] = True
    return True


def _record(layer: Layer, case: Case, kind: str, fields: dict, density: float,
            backend: str, memory_format: str, sets: int) -> dict:
    """``fields``: the kind's own (n, patterns, entries, connectivity) and the sparsity."""
    flop = conv_flop(layer, case.batch) * CONVS_PER_PASS[case.pass_]
    ideal = ideal_speedup(layer, case.batch, case.dtype.itemsize, density, case.machine)
    return {
        "layer": layer.name, "cin": layer.cin, "cout": layer.cout, "kh": layer.k,
        "kw": layer.k, "stride": layer.stride, "padding": layer.padding, "hw": layer.hw,
        "out_hw": layer.out_hw, "count": layer.count,
        "batch": case.batch, "dtype": str(case.dtype).removeprefix("torch."), "pass": case.pass_,
        "kind": kind, **fields, "actual_sparsity": 1.0 - density,
        "backend": backend, "memory_format": memory_format, "rotation_sets": sets,
        "dense_nchw_ms": None, "dense_channels_last_ms": None, "dense_layout": None,
        "dense_ms": None, "dense_tf32_ms": None, "sparse_ms": None,
        "speedup": None, "speedup_vs_tf32": None,
        "peer_2to4_ms": None, "peer_2to4_gemm_ms": None, "speedup_vs_2to4": None,
        "flop": flop, "useful_flop": flop * density, "dense_tflops": None, "sparse_tflops": None,
        "peak_tflops": case.machine.peak_tflops, "bandwidth_gbs": case.machine.bandwidth_gbs,
        "sparse_peak_fraction": None, "ideal_speedup": ideal, "ideal_fraction": None,
        "max_rel_err": None, "tol": TOLERANCE[case.dtype], "ok": False, "error": None,
    }


def _fill_times(rec: dict, dense: dict, peer: dict, sparse_ms: Optional[float]) -> None:
    """Complete a record from the dense times (keyed (layout, tf32)), the 2:4
    peer's (keyed ("2:4", "conv" | "gemm"), or none) and its own."""
    rec["peer_2to4_ms"] = peer.get(("2:4", "conv"))
    rec["peer_2to4_gemm_ms"] = peer.get(("2:4", "gemm"))
    strict = {layout: dense[(layout, False)] for layout in LAYOUTS}
    layout = min(strict, key=strict.__getitem__)
    rec.update(dense_nchw_ms=strict["nchw"], dense_channels_last_ms=strict["channels_last"],
               dense_layout=layout, dense_ms=strict[layout],
               dense_tflops=rec["flop"] / (strict[layout] * 1e9))
    tf32 = [ms for (_, tf32), ms in dense.items() if tf32]
    if tf32:
        rec["dense_tf32_ms"] = min(tf32)
    if sparse_ms is None:
        return
    rec["sparse_ms"] = sparse_ms
    rec["speedup"] = rec["dense_ms"] / sparse_ms
    if rec["dense_tf32_ms"] is not None:
        rec["speedup_vs_tf32"] = rec["dense_tf32_ms"] / sparse_ms
    if rec["peer_2to4_gemm_ms"] is not None:
        rec["speedup_vs_2to4"] = rec["peer_2to4_gemm_ms"] / sparse_ms
    rec["sparse_tflops"] = rec["useful_flop"] / (sparse_ms * 1e9)
    rec["sparse_peak_fraction"] = fraction(rec["sparse_tflops"], rec["peak_tflops"])
    rec["ideal_fraction"] = fraction(rec["speedup"], rec["ideal_speedup"])


def configs_per_layer(plan: Plan) -> int:
    points = sum(len(KINDS[k].settings(plan.ns, plan.patterns, plan.entries))
                 * len(KINDS[k].levels(plan.sparsities, plan.connectivities)) for k in plan.kinds)
    return points * len(plan.backends) * len(plan.memory_formats)


def run_layer(plan: Plan, layer: Layer, case: Case) -> list[dict]:
    """Check, then time, every sparse configuration of one layer; one record each."""
    w, sets = _input_sets(layer, case, plan)
    dense_steps = _dense_steps(layer, case, plan, w, sets)
    peer_steps = _peer_steps(layer, case, plan, w, sets)
    sparse_steps, records = {}, {}
    needs_w = PASSES[case.pass_][1]
    for kind_name in plan.kinds:
        kind = KINDS[kind_name]
        for setting in kind.settings(plan.ns, plan.patterns, plan.entries):
            for level in kind.levels(plan.sparsities, plan.connectivities):
                fields = kind.record_fields(setting, level, layer.k * layer.k)
                fmt = kind.build(w.detach(), setting, level, plan.seed)
                fmt.topology()  # cached: index building stays out of the timed region
                param = kind.param(fmt).requires_grad_(needs_w)
                density = (fmt.to_dense() != 0).double().mean().item()
                want = _reference(kind, fmt, layer, case.pass_, sets[0])
                for backend in plan.backends:
                    def forward(x, kind=kind, fmt=fmt, backend=backend):
                        return kind.conv(x, fmt, layer, backend)
                    for mf in plan.memory_formats:
                        key = (kind_name, setting, level, backend, mf)
                        rec = records[key] = _record(layer, case, kind_name, fields, density,
                                                     backend, mf, len(sets))
                        x0, g0 = sets[0].by_layout[mf]
                        if check(rec, partial(pass_outputs, case.pass_, forward, x0, param, g0),
                                 want):
                            sparse_steps[key] = rotating([
                                pass_call(case.pass_, forward, x, param, g)
                                for x, g in (s.by_layout[mf] for s in sets)])
    times = median_ms({**dense_steps, **peer_steps, **sparse_steps}, plan.device, plan.warmup,
                      plan.repeat)
    dense = {key: times[key] for key in dense_steps}
    peer = {key: times[key] for key in peer_steps}
    for key, rec in records.items():
        _fill_times(rec, dense, peer, times.get(key))
    return list(records.values())
