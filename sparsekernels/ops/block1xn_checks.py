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
from ..formats.block1xn import Block1xN, BlockTopology

NATIVE = ("cpu", "cuda")


def _check_activation(name: str, t: Tensor, like: Tensor):
    if t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor, got shape {tuple(t.shape)}")
    if t.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype}, got {t.dtype}")
    if t.device != like.device:
        raise ValueError(f"{name}: expected a tensor on {like.device}, got {t.device}")


def _check_values(values: Tensor, like: Tensor, topo: BlockTopology):
    _check_activation("values", values, like)
    want = (topo.nnzb, *topo.kernel_size, topo.n)
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


def _check_channels(name: str, t: Tensor, channels: int):
    if t.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got {t.shape[1]}")


def _check_spatial(grad_out: Tensor, in_hw: tuple[int, int], topo: BlockTopology, conv: ConvArgs):
    want = output_hw(in_hw, topo.kernel_size, conv)
    if min(want) < 1:
        raise ValueError(f"input: spatial size {tuple(in_hw)} is too small for kernel "
                         f"{topo.kernel_size} with padding {conv.padding} and dilation "
                         f"{conv.dilation}")
    if tuple(grad_out.shape[2:]) != want:
        raise ValueError(f"grad_out: spatial size {tuple(grad_out.shape[2:])} does not match "
                         f"the convolution's output {want}")


def check_topology(topo: BlockTopology, transposed: bool):
    """Raise unless a kernel may read ``topo``: indices in range, CSR order,
    and (``transposed``) the transposed view equal to the one the CSR implies."""
    if _ext.C is not None:
        extra = (topo.col_ptr, topo.block_idx, topo.block_row) if transposed else (None,) * 3
        _ext.C.block1xn_check_topology(topo.row_ptr, topo.col_idx, *extra, topo.n,
                                       topo.rows_per_group, topo.cout, topo.cin, topo.groups)
        return
    # Without the compiled module: the format validates the CSR, and the
    # transposed view must equal the one it derives.
    values = torch.zeros((), device=topo.row_ptr.device).expand(
        topo.nnzb, *topo.kernel_size, topo.n)  # only its shape is read
    fmt = Block1xN(topo.row_ptr, topo.col_idx, values, topo.shape, topo.n, topo.groups)
    if transposed:
        want = fmt.topology()
        if not all(torch.equal(getattr(topo, k).cpu(), getattr(want, k).cpu())
                   for k in ("col_ptr", "block_idx", "block_row")):
            raise ValueError("col_ptr/block_idx/block_row: not the transpose of row_ptr/col_idx")


def _check_groups(topo: BlockTopology, conv: ConvArgs):
    if conv.groups != topo.groups:
        raise ValueError(f"groups: {conv.groups} does not match the weight's groups={topo.groups}")


def check_forward(backend: str, x: Tensor, values: Tensor, topo: BlockTopology,
                  bias: Optional[Tensor], conv: ConvArgs):
    _check_groups(topo, conv)
    _check_activation("input", x, x)
    _check_channels("input", x, topo.cin)
    _check_values(values, x, topo)
    _check_bias(bias, x, topo.cout)
    if min(output_hw(tuple(x.shape[2:]), topo.kernel_size, conv)) < 1:
        raise ValueError(f"input: spatial size {tuple(x.shape[2:])} is too small for kernel "
                         f"{topo.kernel_size} with padding {conv.padding} and dilation "
                         f"{conv.dilation}")
    if backend not in NATIVE:
        check_topology(topo, transposed=False)


def check_grad_input(backend: str, grad_out: Tensor, values: Tensor, topo: BlockTopology,
                     conv: ConvArgs, in_hw: tuple[int, int]):
    _check_groups(topo, conv)
    _check_activation("grad_out", grad_out, grad_out)
    _check_channels("grad_out", grad_out, topo.cout)
    _check_values(values, grad_out, topo)
    in_hw = (as_int(in_hw[0], "input_hw", 1), as_int(in_hw[1], "input_hw", 1))
    _check_spatial(grad_out, in_hw, topo, conv)
    if backend not in NATIVE:
        check_topology(topo, transposed=True)


def check_grad_weight(backend: str, x: Tensor, grad_out: Tensor, topo: BlockTopology,
                      conv: ConvArgs):
    _check_groups(topo, conv)
    _check_activation("input", x, x)
    _check_activation("grad_out", grad_out, x)
    _check_channels("input", x, topo.cin)
    _check_channels("grad_out", grad_out, topo.cout)
    if grad_out.shape[0] != x.shape[0]:
        raise ValueError(f"grad_out: batch {grad_out.shape[0]} does not match the input's "
                         f"{x.shape[0]}")
    _check_spatial(grad_out, tuple(x.shape[2:]), topo, conv)
    if backend not in NATIVE:
        check_topology(topo, transposed=False)
