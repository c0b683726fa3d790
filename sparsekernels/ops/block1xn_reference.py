"""Reference backend of the 1xN conv: dense PyTorch on the decoded weight.

The oracle every kernel is tested against. Dense semantics: a pruned weight is
a stored zero here, so a NaN/Inf input propagates through it (0 * NaN = NaN),
whereas the sparse kernels never read pruned weights at all.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..formats.block1xn import decode, gather
from ..conv_args import Bias, ConvArgs
from ..formats.block1xn import BlockTopology


def _dense_weight(values: torch.Tensor, topo: BlockTopology, cout: int, cin: int, groups: int):
    return decode(values, topo.row_ptr, topo.col_idx, cout, cin // groups, groups)


def forward(x, values, topo: BlockTopology, bias: Bias, conv: ConvArgs, cout: int):
    w = _dense_weight(values, topo, cout, x.shape[1], conv.groups)
    return F.conv2d(x, w, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def grad_input(grad_out, values, topo: BlockTopology, conv: ConvArgs, in_hw, cin: int):
    w = _dense_weight(values, topo, grad_out.shape[1], cin, conv.groups)
    shape = (grad_out.shape[0], cin, *in_hw)
    return torch.nn.grad.conv2d_input(
        shape, w, grad_out, conv.stride, conv.padding, conv.dilation, conv.groups
    )


def grad_weight(x, grad_out, topo: BlockTopology, conv: ConvArgs, kernel_size):
    cout = grad_out.shape[1]
    shape = (cout, x.shape[1] // conv.groups, *kernel_size)
    gw = torch.nn.grad.conv2d_weight(
        x, shape, grad_out, conv.stride, conv.padding, conv.dilation, conv.groups
    )
    return gather(gw, topo.row_ptr, topo.col_idx, topo.n, conv.groups).contiguous()
