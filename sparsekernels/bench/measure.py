"""One layer of the benchmark: data, sparse formats, correctness, timing, records.

Every sparse configuration is first checked against a float64 dense conv on
its decoded weight (and, when timing the backward, the input and weight
gradients too), then timed interleaved with the dense baseline in both memory
formats. Formats and their topology are built before any timing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from ..formats.block_1xn import Block1xN, gather
from ..ops.block_conv import block_conv2d
from .suites import Layer
from .timing import median_ms

# max|err| / max|ref| above which a configuration is flagged.
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2, torch.float64: 1e-10}


class Kind(NamedTuple):
    """How one sparsity kind builds its weight and runs its conv."""

    build: Callable[[Tensor, int, float, int], object]  # (weight, n, sparsity, seed)
    conv: Callable[[Tensor, object, Layer, str], Tensor]  # (x, format, layer, backend)
    param: Callable[[object], Tensor]  # the trainable tensor of a format
    param_grad: Callable[[object, Tensor], Tensor]  # dense weight grad -> param grad


KINDS = {
    "1xN": Kind(
        build=lambda w, n, s, seed: Block1xN.from_dense(w, n, s, "random", seed=seed),
        conv=lambda x, f, layer, backend: block_conv2d(
            x, f, None, layer.stride, layer.padding, backend=backend),
        param=lambda f: f.values,
        param_grad=lambda f, g: gather(g, f.row_ptr, f.col_idx, f.n, f.groups),
    ),
}


@dataclass(frozen=True)
class Plan:
    """What to run on every layer (resolved from the command line)."""

    kind: str
    dtype: torch.dtype
    device: torch.device
    batch: int
    ns: tuple[int, ...]
    sparsities: tuple[float, ...]
    backends: tuple[str, ...]
    warmup: int
    repeat: int
    seed: int


def _data(plan: Plan, layer: Layer, backward: bool):
    """Input, dense weight (~unit-variance output) and, for backward, a grad_out."""
    gen = torch.Generator().manual_seed(plan.seed)

    def randn(*shape, scale=1.0):  # drawn on the CPU: every device sees the same numbers
        return (torch.randn(*shape, generator=gen) * scale).to(plan.device, plan.dtype)

    x = randn(plan.batch, layer.cin, layer.hw, layer.hw).requires_grad_(backward)
    w = randn(layer.cout, layer.cin, layer.k, layer.k, scale=(layer.cin * layer.k ** 2) ** -0.5)
    w.requires_grad_(backward)
    grad_out = randn(plan.batch, layer.cout, layer.out_hw, layer.out_hw) if backward else None
    return x, w, grad_out


def _step(forward: Callable[[], Tensor], inputs, grad_out: Optional[Tensor]):
    """The timed callable: the forward, or forward + backward to ``inputs``."""
    if grad_out is None:
        return forward
    return lambda: torch.autograd.grad(forward(), inputs, grad_out)


def _outputs(forward: Callable[[], Tensor], inputs, grad_out: Optional[Tensor]) -> list[Tensor]:
    out = forward()
    if grad_out is None:
        return [out]
    return [out, *torch.autograd.grad(out, inputs, grad_out)]


def _channels_last(t: Optional[Tensor]) -> Optional[Tensor]:
    if t is None:
        return None
    return t.detach().contiguous(memory_format=torch.channels_last).requires_grad_(t.requires_grad)


def _dense_steps(x: Tensor, w: Tensor, layer: Layer, grad_out: Optional[Tensor]) -> dict:
    steps = {}
    for layout, (xd, wd, gd) in (
        ("nchw", (x, w, grad_out)),
        ("channels_last", tuple(_channels_last(t) for t in (x, w, grad_out))),
    ):
        def forward(xd=xd, wd=wd):
            return F.conv2d(xd, wd, None, layer.stride, layer.padding)
        steps[layout] = _step(forward, (xd, wd), gd)
    return steps


def _reference(kind: Kind, x: Tensor, fmt, layer: Layer,
               grad_out: Optional[Tensor]) -> list[Tensor]:
    """float64 dense conv on the decoded weight: output (and grads of x, param)."""
    backward = grad_out is not None
    x64 = x.detach().double().requires_grad_(backward)
    w64 = fmt.to_dense().detach().double().requires_grad_(backward)
    forward = lambda: F.conv2d(x64, w64, None, layer.stride, layer.padding)  # noqa: E731
    outs = _outputs(forward, (x64, w64), None if grad_out is None else grad_out.double())
    if backward:
        outs[2] = kind.param_grad(fmt, outs[2])
    return outs


def max_rel_err(got: list[Tensor], want: list[Tensor]) -> float:
    """Worst max|got - want| / max|want| over the compared tensors (NaN if any is)."""
    errs = []
    for g, w in zip(got, want):
        scale = max(w.abs().max().item(), torch.finfo(torch.float64).tiny)
        errs.append((g.detach().double() - w).abs().max().item() / scale)
    return math.nan if any(map(math.isnan, errs)) else max(errs)


def _record(plan: Plan, layer: Layer, fmt, n: int, sparsity: float, backend: str,
            backward: bool) -> dict:
    flop = 2 * plan.batch * layer.cout * layer.cin * layer.k ** 2 * layer.out_hw ** 2
    return {
        "kind": plan.kind, "layer": layer.name, "cin": layer.cin, "cout": layer.cout,
        "kh": layer.k, "kw": layer.k, "stride": layer.stride, "padding": layer.padding,
        "hw": layer.hw, "out_hw": layer.out_hw, "batch": plan.batch, "count": layer.count,
        "n": n, "sparsity": sparsity, "actual_sparsity": fmt.sparsity,
        "dtype": str(plan.dtype).removeprefix("torch."), "device": plan.device.type,
        "backend": backend, "passes": "forward+backward" if backward else "forward",
        "dense_ms": None, "sparse_ms": None, "speedup": None,
        "dense_nchw_ms": None, "dense_channels_last_ms": None, "dense_layout": None,
        "max_rel_err": None, "tol": TOLERANCE[plan.dtype], "ok": False, "error": None,
        "dense_gflop": flop * (3 if backward else 1) / 1e9,
    }


def run_layer(plan: Plan, layer: Layer, backward: bool) -> list[dict]:
    """Check and time every (n, sparsity, backend) of one layer; one record each."""
    kind = KINDS[plan.kind]
    x, w, grad_out = _data(plan, layer, backward)
    steps, records = _dense_steps(x, w, layer, grad_out), {}
    for n in plan.ns:
        for sparsity in plan.sparsities:
            fmt = kind.build(w, n, sparsity, plan.seed)
            fmt.topology()  # cached: index building stays out of the timed region
            kind.param(fmt).requires_grad_(backward)
            want = _reference(kind, x, fmt, layer, grad_out)
            for backend in plan.backends:
                key = (n, sparsity, backend)
                rec = records[key] = _record(plan, layer, fmt, n, sparsity, backend, backward)
                forward = lambda f=fmt, b=backend: kind.conv(x, f, layer, b)  # noqa: E731
                inputs = (x, kind.param(fmt))
                # A kernel may reject a shape or run out of memory: record it, go on.
                try:
                    rec["max_rel_err"] = max_rel_err(_outputs(forward, inputs, grad_out), want)
                except Exception as exc:  # noqa: BLE001
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    continue
                rec["ok"] = rec["max_rel_err"] <= rec["tol"]  # False for NaN too
                steps[key] = _step(forward, inputs, grad_out)
    times = median_ms(steps, plan.device, plan.warmup, plan.repeat)
    dense_layout = min(("nchw", "channels_last"), key=times.__getitem__)
    for key, rec in records.items():
        rec.update(dense_nchw_ms=times["nchw"], dense_channels_last_ms=times["channels_last"],
                   dense_layout=dense_layout, dense_ms=times[dense_layout])
        if key in times:
            rec["sparse_ms"] = times[key]
            rec["speedup"] = rec["dense_ms"] / rec["sparse_ms"]
    return list(records.values())
