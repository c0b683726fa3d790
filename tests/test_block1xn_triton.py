"""Triton 1xN block-sparse conv kernels vs a float64 dense PyTorch reference.

Without CUDA the kernels run under the Triton interpreter (CPU). Every output
the kernels allocate is poisoned with NaN first, so an element a kernel forgets
to write fails the comparison.
"""
import os
from dataclasses import dataclass

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede importing triton

triton = pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from sparsekernels.formats import Block1xN  # noqa: E402
from sparsekernels.conv_args import ConvArgs, output_hw  # noqa: E402
from sparsekernels.triton import block1xn as bct  # noqa: E402

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"


@dataclass(frozen=True)
class Case:
    name: str
    batch: int = 2
    cin: int = 6
    cout: int = 10  # N=4 -> rows of 4, 4, 2: a short last row
    hw: tuple = (7, 9)
    k: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (1, 1)
    dilation: tuple = (1, 1)
    groups: int = 1
    n: int = 4
    sparsity: float = 0.5
    bias: bool = True
    layout: str = "contiguous"  # or "channels_last", "strided"


CASES = [
    Case("odd_hw_short_row"),
    Case("stride2_pad0_n8_dense", cout=16, n=8, stride=(2, 2), padding=(0, 0),
         sparsity=0.0, bias=False),
    Case("pad2_dil2_groups2", cin=4, cout=12, groups=2, padding=(2, 2), dilation=(2, 2)),
    Case("n1_k1x3_stride2x1", cout=5, n=1, k=(1, 3), stride=(2, 1), padding=(0, 1)),
    Case("n16_k5_short_row", cout=20, n=16, hw=(5, 6), k=(5, 5), padding=(2, 2)),
    Case("fully_pruned_bias", sparsity=1.0),
    Case("fully_pruned_no_bias", sparsity=1.0, bias=False),
    Case("empty_batch", batch=0),
    Case("channels_last_groups2", cout=8, groups=2, stride=(2, 2), layout="channels_last"),
    Case("strided_inputs", cout=12, n=8, layout="strided", bias=False),
]
CASE_IDS = [c.name for c in CASES]

# Error allowed even when torch's own error is smaller, relative to max |ref|.
FLOOR = {torch.float16: 2**-10, torch.bfloat16: 2**-7, torch.float32: 1e-5, torch.float64: 1e-12}
BF16_SKIP = "bf16 tl.dot returns garbage under the Triton interpreter; runs on a GPU"
DTYPES = [
    torch.float32,
    torch.float16,
    pytest.param(torch.bfloat16, marks=pytest.mark.skipif(INTERPRET, reason=BF16_SKIP)),
]


@pytest.fixture(autouse=True)
def poison_empty(monkeypatch):
    """NaN-fill every floating torch.empty, so unwritten outputs show up."""
    real_empty = torch.empty

    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", empty)


# ---- problem setup --------------------------------------------------------
def _layout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """Same values, different strides (fresh storage each time)."""
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "strided":
        b, c, h, w = t.shape
        big = torch.randn(b, c + 2, h, 2 * w, dtype=t.dtype, device=t.device)
        view = big[:, 1 : c + 1, :, ::2]
        view.copy_(t)
        return view
    return t


def _problem(case: Case, dtype: torch.dtype, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(case.cout, case.cin // case.groups, *case.k, generator=gen)
    fmt = Block1xN.from_dense(
        w, case.n, case.sparsity, criterion="random", groups=case.groups, seed=seed
    ).to(device=DEVICE, dtype=dtype)
    x = torch.randn(case.batch, case.cin, *case.hw, generator=gen).to(DEVICE, dtype)
    bias = torch.randn(case.cout, generator=gen).to(DEVICE, dtype) if case.bias else None
    conv = ConvArgs(case.stride, case.padding, case.dilation, case.groups)
    oh, ow = output_hw(case.hw, case.k, conv)
    go = torch.randn(case.batch, case.cout, oh, ow, generator=gen).to(DEVICE, dtype)
    return fmt, _layout(x, case.layout), bias, _layout(go, case.layout), conv


def _reference(fmt, x, bias, go, conv, dtype):
    """Dense conv and its gradients in ``dtype`` (weight gradient in block
    layout), on the CPU: no TF32, the same numbers whatever the kernels ran on."""
    fmt = fmt.to(device="cpu")
    xr = x.detach().cpu().to(dtype).requires_grad_()
    wr = fmt.to_dense().to(dtype).requires_grad_()
    b = bias.cpu().to(dtype) if bias is not None else None
    out = F.conv2d(xr, wr, b, conv.stride, conv.padding, conv.dilation, conv.groups)
    gx, gw = torch.autograd.grad(out, (xr, wr), go.cpu().to(dtype))
    return {"forward": out.detach(), "grad_input": gx, "grad_weight": _to_values(gw, fmt)}


def _block_lanes(fmt: Block1xN):
    """Per kept block, its N lanes' output channels (clamped) and validity."""
    topo = fmt.topology()
    rows = torch.zeros(fmt.nnzb, dtype=torch.long, device=fmt.device)
    rows[topo.block_idx.long()] = topo.block_row.long()
    cout_g = fmt.cout // fmt.groups
    g, q = rows // fmt.rows_per_group, rows % fmt.rows_per_group
    lane = q[:, None] * fmt.n + torch.arange(fmt.n, device=fmt.device)
    valid = lane < cout_g
    return g[:, None] * cout_g + lane.clamp(max=cout_g - 1), valid


def _to_values(dense: torch.Tensor, fmt: Block1xN) -> torch.Tensor:
    """Gather a dense [Cout, Cin/g, Kh, Kw] tensor into the kept blocks'
    [nnzb, Kh, Kw, N] layout, padded lanes 0."""
    oc, valid = _block_lanes(fmt)
    blocks = dense[oc, fmt.col_idx.long()[:, None]] * valid[:, :, None, None]
    return blocks.permute(0, 2, 3, 1)


def _run(kind: str, fmt, x, bias, go, conv):
    topo = fmt.topology()
    if kind == "forward":
        return bct.forward(x, fmt.values, topo, bias, conv)
    if kind == "grad_input":
        return bct.grad_input(go, fmt.values, topo, conv, tuple(x.shape[2:]))
    return bct.grad_weight(x, go, topo, conv)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.cpu().double() - b.cpu().double()).abs().max().item() if a.numel() else 0.0


def _check_close(kind, got, fmt, x, bias, go, conv, dtype):
    """Error vs fp64 within 2x that of torch doing the same in fp32 with its
    result rounded to ``dtype`` (fp64: vs itself), or within the floor."""
    ref = _reference(fmt, x, bias, go, conv, torch.float64)[kind]
    torch_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    torchish = _reference(fmt, x, bias, go, conv, torch_dtype)[kind].to(dtype)
    assert got.shape == ref.shape and got.dtype == dtype
    scale = max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    bound = max(2 * _max_err(torchish, ref), FLOOR[dtype] * scale)
    err = _max_err(got, ref)
    assert err <= bound, f"{kind}: max error {err:.3g} > bound {bound:.3g}"  # NaN fails too


# ---- tests ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_forward(case, dtype):
    fmt, x, bias, go, conv = _problem(case, dtype)
    out = _run("forward", fmt, x, bias, go, conv)
    assert out.is_contiguous()
    _check_close("forward", out, fmt, x, bias, go, conv, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_input(case, dtype):
    fmt, x, bias, go, conv = _problem(case, dtype)
    gi = _run("grad_input", fmt, x, bias, go, conv)
    assert gi.is_contiguous()
    _check_close("grad_input", gi, fmt, x, bias, go, conv, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_grad_weight(case, dtype):
    fmt, x, bias, go, conv = _problem(case, dtype)
    gw = _run("grad_weight", fmt, x, bias, go, conv)
    _check_close("grad_weight", gw, fmt, x, bias, go, conv, dtype)
    _, valid = _block_lanes(fmt)
    padded = gw.permute(0, 3, 1, 2)[~valid]
    assert (padded.cpu() == 0).all(), "padded lanes of the weight gradient must be exactly 0"


@pytest.mark.parametrize("kind", ["forward", "grad_input", "grad_weight"])
@pytest.mark.parametrize("case", [CASES[0], CASES[2]], ids=[CASES[0].name, CASES[2].name])
def test_float64(case, kind):
    fmt, x, bias, go, conv = _problem(case, torch.float64, seed=1)
    _check_close(kind, _run(kind, fmt, x, bias, go, conv), fmt, x, bias, go, conv, torch.float64)


def test_rejects_unsupported_and_mismatched_dtypes():
    fmt, x, bias, go, conv = _problem(CASES[0], torch.float32)
    topo = fmt.topology()
    with pytest.raises(TypeError, match="torch.int32"):
        bct.forward(x.to(torch.int32), fmt.values, topo, bias, conv)
    with pytest.raises(TypeError, match="torch.float16"):
        bct.grad_input(go.half(), fmt.values, topo, conv, tuple(x.shape[2:]))
    with pytest.raises(TypeError, match="torch.float16"):
        bct.grad_weight(x, go.half(), topo, conv)
