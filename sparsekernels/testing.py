"""Shared test helpers: which backends run here, random cases, the float64
oracle and the low-precision tolerance rule."""
from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from . import _ext
from .formats.base import SparseConvFormat
from .kinds import KINDS
from .ops.backends import triton_available

LOW_PRECISION = (torch.float16, torch.bfloat16)


def backends_here(device: str = "cpu") -> list[str]:
    """Backends that can run on ``device`` on this machine."""
    names = ["reference"]
    if device == "cpu" and _ext.has_cpu_kernels():
        names.append("cpu")
    if device == "cuda" and _ext.has_cuda_kernels():
        names.append("cuda")
    if triton_available() and (device == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
        names.append("triton")
    return names


def devices_here() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# Each registered kind's parameters when a test gives none.
DEFAULT_PARAMS = {"block1xn": {"n": 4}, "stripe": {}, "pattern": {}}


class Case(NamedTuple):
    x: torch.Tensor
    weight: SparseConvFormat  # of the case's kind
    bias: Optional[torch.Tensor]
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    groups: int


def make_case(
    batch=2, cin=6, cout=10, hw=(7, 9), kernel=(3, 3), sparsity=0.5, groups=1,
    stride=1, padding=1, dilation=1, bias=True, dtype=torch.float64, device="cpu",
    channels_last=False, noncontiguous=False, seed=0, kind="block1xn", **params,
) -> Case:
    """A random conv problem (inputs never zero) with a weight of ``kind``
    (``params``: the kind's own, e.g. ``n=4``; its defaults otherwise)."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return (torch.rand(*shape, generator=gen, dtype=torch.float64) * 2 - 1 + 0.05)

    w = rand(cout, cin // groups, *kernel)
    fmt = KINDS[kind].format.from_dense(
        w, sparsity=sparsity, criterion="random", groups=groups, seed=seed,
        **{**DEFAULT_PARAMS[kind], **params},
    ).to(device, dtype)
    x = rand(batch, cin, *hw).to(device, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noncontiguous:  # every other column of a wider tensor
        wide = rand(batch, cin, hw[0], 2 * hw[1]).to(device, dtype)
        wide[..., ::2] = x
        x = wide[..., ::2]
    b = rand(cout).to(device, dtype) if bias else None
    pair = lambda v: (v, v) if isinstance(v, int) else tuple(v)  # noqa: E731
    return Case(x, fmt, b, pair(stride), pair(padding), pair(dilation), groups)


def reference_output(case: Case) -> torch.Tensor:
    """Dense float64 ``F.conv2d`` on the decoded weight: the oracle."""
    w = case.weight.to_dense().double()
    b = None if case.bias is None else case.bias.double()
    return F.conv2d(case.x.double(), w, b, case.stride, case.padding, case.dilation, case.groups)


def reference_grads(case: Case, grad_out: torch.Tensor) -> tuple:
    """``(grad_x, grad_values, grad_bias)`` by dense float64 autograd through
    ``F.conv2d`` on the decoded weight: no custom op or sparse backward on
    this path, so a wiring bug shared by every backend cannot hide. The
    values' gradient is the dense weight's gradient at the kept blocks."""
    x = case.x.detach().double().requires_grad_()
    w = case.weight.to_dense().detach().double().requires_grad_()
    b = None if case.bias is None else case.bias.detach().double().requires_grad_()
    out = F.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    inputs = [t for t in (x, w, b) if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_out.double().to(out.device))
    return grads[0], case.weight.gather(grads[1]), grads[2] if b is not None else None


def low_precision_budget(case: Case, dtype: torch.dtype) -> float:
    """2x the max error of PyTorch's own conv at ``dtype`` (inputs rounded to
    ``dtype``, computed by torch, compared with the float64 oracle), floored so
    a lucky-exact PyTorch result does not demand the impossible."""
    w = case.weight.to_dense().to(dtype)
    b = None if case.bias is None else case.bias.to(dtype)
    x = case.x.to(dtype)
    try:
        torch_out = F.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    except RuntimeError:  # no low-precision conv on this device: emulate its rounding
        torch_out = F.conv2d(x.float(), w.float(), None if b is None else b.float(),
                             case.stride, case.padding, case.dilation, case.groups).to(dtype)
    err = (torch_out.double() - reference_output(case)).abs().max().item() if torch_out.numel() else 0.0
    return max(2 * err, torch.finfo(dtype).eps * 4)
