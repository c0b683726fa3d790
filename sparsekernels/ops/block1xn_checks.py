"""What the 1xN custom ops check before a backend sees their operands.

The custom ops (``torch.ops.sparsekernels.block1xn_conv2d*``) are public entry
points: anyone can call them with tensors that never went through
``Block1xN``. So each op body checks its operands before dispatching: the
O(1) shape, dtype and device checks here for every backend, then the whole
topology (linear in the number of blocks: microseconds, invisible next to the
conv) once. The native backend's C++ entry points
(``python_bindings/``) run that topology check themselves,
since ``sparsekernels._C`` is reachable too; for the Triton and reference
backends it is called from here. Messages name the argument.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .. import _ext
from ..conv_args import ConvArgs, as_int, output_hw
from ..formats.block1xn import MAX_BLOCK_HEIGHT, Block1xN, BlockTopology

NATIVE = ("cpu", "cuda")


def _check_activation(name: str, t: Tensor, like: Tensor):
    if t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor, got shape {tuple(t.shape)}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype}, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device}, got {t.device}")


def _check_values(values: Tensor, like: Tensor, topo: BlockTopology, kernel: tuple[int, int]):
    _check_activation("values", values, like)
    as_int(topo.n, "n", 1, MAX_BLOCK_HEIGHT)
    want = (topo.col_idx.numel(), *kernel, topo.n)
    if tuple(values.shape) != want:
        raise ValueError(f"values: expected shape [nnzb, Kh, Kw, N] = {list(want)}, "
                         f"got {list(values.shape)}")


def _check_bias(bias: Optional[Tensor], like: Tensor, cout: int):
    if bias is None:
        return
    if bias.dtype != like.dtype or bias.device != like.device:
        raise TypeError(f"bias: expected {like.dtype} on {like.device}, "
                        f"got {bias.dtype} on {bias.device}")
    if tuple(bias.shape) != (cout,):
        raise ValueError(f"bias: expected shape [{cout}], got {list(bias.shape)}")


def check_topology(topo: BlockTopology, cout: int, cin: int, groups: int, transposed: bool):
    """Raise unless a kernel may read ``topo`` for a conv with these channels:
    indices in range, CSR order, and (``transposed``) the transposed view
    equal to the one the CSR implies."""
    cout = as_int(cout, "out_channels", 1)
    cin = as_int(cin, "in_channels", 1)
    extra = (topo.col_ptr, topo.block_idx, topo.block_row) if transposed else (None,) * 3
    if _ext.C is not None:
        _ext.C.block_conv_check_topology(topo.row_ptr, topo.col_idx, *extra, topo.n,
                                         topo.rows_per_group, cout, cin, groups)
    else:
        _check_topology_python(topo, cout, cin, groups, transposed)


def _check_topology_python(topo: BlockTopology, cout: int, cin: int, groups: int,
                           transposed: bool):
    """The same check without the compiled module: the format validates the
    CSR, and the transposed view must equal the one it derives."""
    if cin % groups or cout % groups:
        raise ValueError(f"groups: {groups} must divide in_channels={cin} and out_channels={cout}")
    fmt = Block1xN(topo.row_ptr, topo.col_idx, torch.empty(topo.col_idx.numel(), 1, 1, topo.n),
                   (cout, cin // groups, 1, 1), topo.n, groups)
    if topo.rows_per_group != fmt.rows_per_group:
        raise ValueError(f"rows_per_group: expected {fmt.rows_per_group}, got {topo.rows_per_group}")
    if transposed:
        want = fmt.topology()
        if not all(torch.equal(getattr(topo, k).cpu(), getattr(want, k).cpu())
                   for k in ("col_ptr", "block_idx", "block_row")):
            raise ValueError("col_ptr/block_idx/block_row: not the transpose of row_ptr/col_idx")


def _check_spatial(grad_out: Tensor, in_hw: tuple[int, int], kernel, conv: ConvArgs):
    want = output_hw(in_hw, kernel, conv)
    if min(want) < 1:
        raise ValueError(f"input: spatial size {tuple(in_hw)} is too small for kernel {kernel}")
    if tuple(grad_out.shape[2:]) != want:
        raise ValueError(f"grad_out: spatial size {tuple(grad_out.shape[2:])} does not match "
                         f"the convolution's output {want}")


def check_forward(backend: str, x: Tensor, values: Tensor, topo: BlockTopology,
                  bias: Optional[Tensor], conv: ConvArgs, cout: int):
    _check_activation("input", x, x)
    _check_values(values, x, topo, tuple(values.shape[1:3]))
    _check_bias(bias, x, cout)
    if min(output_hw(tuple(x.shape[2:]), tuple(values.shape[1:3]), conv)) < 1:
        raise ValueError(f"input: spatial size {tuple(x.shape[2:])} is too small for the kernel")
    if backend not in NATIVE:
        check_topology(topo, cout, x.shape[1], conv.groups, transposed=False)


def check_grad_input(backend: str, grad_out: Tensor, values: Tensor, topo: BlockTopology,
                     conv: ConvArgs, in_hw: tuple[int, int], cin: int):
    _check_activation("grad_out", grad_out, grad_out)
    _check_values(values, grad_out, topo, tuple(values.shape[1:3]))
    in_hw = (as_int(in_hw[0], "in_h", 1), as_int(in_hw[1], "in_w", 1))
    _check_spatial(grad_out, in_hw, tuple(values.shape[1:3]), conv)
    if backend not in NATIVE:
        check_topology(topo, grad_out.shape[1], cin, conv.groups, transposed=True)


def check_grad_weight(backend: str, x: Tensor, grad_out: Tensor, topo: BlockTopology,
                      conv: ConvArgs, kernel: tuple[int, int]):
    _check_activation("input", x, x)
    _check_activation("grad_out", grad_out, x)
    kernel = (as_int(kernel[0], "kh", 1), as_int(kernel[1], "kw", 1))
    as_int(topo.n, "n", 1, MAX_BLOCK_HEIGHT)
    if grad_out.shape[0] != x.shape[0]:
        raise ValueError(f"grad_out: batch {grad_out.shape[0]} does not match the input's "
                         f"{x.shape[0]}")
    _check_spatial(grad_out, tuple(x.shape[2:]), kernel, conv)
    if backend not in NATIVE:
        check_topology(topo, grad_out.shape[1], x.shape[1], conv.groups, transposed=False)
