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


def _dense_weight(values: torch.Tensor, topo: BlockTopology):
    return decode(values, topo.row_ptr, topo.col_idx, topo.cout, topo.shape[1], topo.groups)


def forward(x, values, topo: BlockTopology, bias: Bias, conv: ConvArgs):
    return F.conv2d(x, _dense_weight(values, topo), bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def grad_input(grad_out, values, topo: BlockTopology, conv: ConvArgs, in_hw):
    shape = (grad_out.shape[0], topo.cin, *in_hw)
    return torch.nn.grad.conv2d_input(
        shape, _dense_weight(values, topo), grad_out, conv.stride, conv.padding, conv.dilation,
        conv.groups,
    )


def grad_weight(x, grad_out, topo: BlockTopology, conv: ConvArgs):
    gw = torch.nn.grad.conv2d_weight(
        x, topo.shape, grad_out, conv.stride, conv.padding, conv.dilation, conv.groups
    )
    return gather(gw, topo.row_ptr, topo.col_idx, topo.n, topo.groups).contiguous()
