"""The pattern CUDA kernels on a GPU, through sparsekernels.pattern_conv2d(...,
backend=BACKEND): forward, grad-input and grad-weight against float64 F.conv2d
and its autograd on the decoded weight, in fp32, fp64, fp16 and bf16.

fp64 must match to 1e-10 and fp32 to 1e-4 (relative to the tensor's scale);
fp16/bf16 within the low-precision rule of sparsekernels.testing: twice
PyTorch's own error at that dtype (here for each of output, grad-input and
grad-values), floored at 4 eps. Skipped without a GPU or without the CUDA
kernels in the extension; scripts/emulate_pattern_cuda.py checks the same
index math on the CPU (tests/test_pattern_cuda_emulation.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsekernels import _ext, pattern_conv2d
from sparsekernels.formats.pattern import Pattern
from sparsekernels.testing import Case, make_case, reference_grads, reference_output

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and _ext.has_cuda_kernels()),
    reason="needs a GPU and the CUDA kernels",
)

DEVICE = BACKEND = "cuda"  # (a CPU dry run of this file's logic swaps both)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]

# name -> make_case arguments (kind "pattern", random library from_dense)
CASES = {
    "default": {},
    "stride2_pad0": dict(stride=2, padding=0, hw=(9, 8)),
    "asym": dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2), hw=(11, 9)),
    "dilation2": dict(dilation=2, padding=2),
    "groups2": dict(groups=2, cin=8, cout=14),
    "depthwise": dict(groups=6, cin=6, cout=12),
    "odd_tiles": dict(cin=37, cout=29, hw=(11, 13), sparsity=0.4),
    "kernel5x3": dict(kernel=(5, 3), padding=(2, 1), cout=16, cin=5, entries=6),
    "pointwise": dict(kernel=(1, 1), padding=0, cout=16),
    "dense": dict(sparsity=0.0),
    "fully_pruned": dict(sparsity=1.0),
    "empty_batch": dict(batch=0),
    "no_bias": dict(bias=False),
    "channels_last": dict(channels_last=True, cout=16),
    "noncontiguous": dict(noncontiguous=True),
    "tiny_image": dict(hw=(1, 1), kernel=(1, 1), padding=0),
    # few kernels, many pixels: grad-weight splits the pixels (split-K)
    "split_k": dict(batch=4, cin=2, cout=3, hw=(64, 64), sparsity=0.5),
}


def _mixed_case(dtype, seed=0, channels_last=False, kernel=(3, 3), density=0.5, hw=(9, 7),
                cin=6, cout=10, groups=1, padding=1):
    """A from_mask weight: every kernel its own positions (mixed pattern sizes,
    some kernels dropped whole)."""
    gen = torch.Generator().manual_seed(seed)
    shape = (cout, cin // groups, *kernel)
    w = torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1
    mask = torch.rand(shape, generator=gen) < density
    mask &= torch.rand(shape[:2], generator=gen)[..., None, None] < 0.8
    fmt = Pattern.from_mask(w, mask, groups=groups).to(DEVICE, dtype)
    x = (torch.rand(2, cin, *hw, generator=gen, dtype=torch.float64) * 2 - 1).to(DEVICE, dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    b = (torch.rand(cout, generator=gen, dtype=torch.float64) - 0.5).to(DEVICE, dtype)
    pad = (padding, padding) if isinstance(padding, int) else padding
    return Case(x, fmt, b, (1, 1), pad, (1, 1), groups)


def _run(case: Case, grad_out: torch.Tensor):
    """pattern_conv2d on CUDA: output and grads to (x, values, bias)."""
    values = case.weight.values.detach().clone().requires_grad_(True)
    x = case.x.detach().clone().requires_grad_(True)
    bias = None if case.bias is None else case.bias.detach().clone().requires_grad_(True)
    out = pattern_conv2d(x, case.weight.with_values(values), bias, case.stride, case.padding,
                         case.dilation, case.groups, backend=BACKEND)
    inputs = [t for t in (x, values, bias) if t is not None]
    grads = torch.autograd.grad(out, inputs, grad_out.to(out.dtype))
    return out, grads[0], grads[1]


def _torch_at(case: Case, grad_out: torch.Tensor, dtype: torch.dtype):
    """PyTorch's own conv at ``dtype`` on the rounded inputs: output, grad_x,
    grad_values (the budget of the low-precision rule)."""
    x = case.x.detach().to(dtype).requires_grad_(True)
    w = case.weight.to_dense().detach().to(dtype).requires_grad_(True)
    b = None if case.bias is None else case.bias.detach().to(dtype)
    out = F.conv2d(x, w, b, case.stride, case.padding, case.dilation, case.groups)
    gx, gw = torch.autograd.grad(out, (x, w), grad_out.to(dtype))
    return out, gx, case.weight.gather(gw)


def _check(case: Case, dtype: torch.dtype, seed=1):
    ref_out = reference_output(case)
    gen = torch.Generator().manual_seed(seed)
    grad_out = torch.randn(ref_out.shape, generator=gen, dtype=torch.float64).to(DEVICE)
    ref_gx, ref_gv, _ = reference_grads(case, grad_out)
    got = _run(case, grad_out)
    assert got[0].dtype == dtype and got[0].shape == ref_out.shape
    refs = (ref_out, ref_gx, ref_gv)
    if dtype in (torch.float16, torch.bfloat16):
        theirs = _torch_at(case, grad_out, dtype)
    for name, g, r, i in zip(("output", "grad_input", "grad_values"), got, refs, range(3)):
        assert g.shape == r.shape, name
        if r.numel() == 0:
            continue
        err = (g.double() - r).abs().max().item()
        assert err == err, f"{name}: NaN (an element not written?)"
        scale = max(r.abs().max().item(), 1.0)
        if dtype == torch.float64:
            budget = 1e-10 * scale
        elif dtype == torch.float32:
            budget = 1e-4 * scale
        else:
            budget = max(2 * (theirs[i].double() - r).abs().max().item(),
                         4 * torch.finfo(dtype).eps * scale)
        assert err <= budget, f"{name} {dtype}: error {err:.3g} > budget {budget:.3g}"


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", CASES)
def test_pattern_cuda_matches_float64(name, dtype):
    case = make_case(kind="pattern", dtype=torch.float64, device=DEVICE, **CASES[name])
    case = case._replace(x=case.x.to(dtype), weight=case.weight.to(dtype=dtype),
                         bias=None if case.bias is None else case.bias.to(dtype))
    _check(case, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("channels_last", [False, True])
def test_mixed_pattern_sizes(dtype, channels_last):
    _check(_mixed_case(dtype, channels_last=channels_last, groups=2, cin=8, cout=12), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_large_kernel_past_the_tap_table(dtype):
    # 1 x 260 kernels (taps past the 256-entry shared table), patterns of
    # ~20 positions (several grad-weight sweeps).
    _check(_mixed_case(dtype, kernel=(1, 260), density=0.08, hw=(3, 8), padding=(0, 130)), dtype)


def test_grad_weight_is_deterministic():
    case = make_case(kind="pattern", batch=4, cin=2, cout=3, hw=(64, 64), device=DEVICE,
                     dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(4, 3, 64, 64, generator=gen).to(DEVICE)
    first = _run(case, g)
    for _ in range(3):
        again = _run(case, g)
        for a, b in zip(first, again):
            assert torch.equal(a, b)
