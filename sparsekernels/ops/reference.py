"""Reference backend of every kind: dense PyTorch on the decoded weight.

The oracle every kernel is tested against. Dense semantics: a pruned weight is
a stored zero here, so a NaN/Inf input propagates through it (0 * NaN = NaN),
whereas the sparse kernels never read pruned weights at all. ``topo`` is any
kind's topology (``to_format(values)`` decodes through the kind's format).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conv_args import Bias, ConvArgs


def _dense_weight(values: torch.Tensor, topo):
    return topo.to_format(values).to_dense()


def forward(x, values, topo, bias: Bias, conv: ConvArgs):
    return F.conv2d(x, _dense_weight(values, topo), bias, conv.stride, conv.padding,
                    conv.dilation, conv.groups)


def grad_input(grad_out, values, topo, conv: ConvArgs, in_hw):
    shape = (grad_out.shape[0], topo.cin, *in_hw)
    return torch.nn.grad.conv2d_input(
        shape, _dense_weight(values, topo), grad_out, conv.stride, conv.padding, conv.dilation,
        conv.groups,
    )


def grad_weight(x, grad_out, topo, conv: ConvArgs):
    gw = torch.nn.grad.conv2d_weight(
        x, topo.shape, grad_out, conv.stride, conv.padding, conv.dilation, conv.groups
    )
    probe = torch.zeros((), dtype=gw.dtype, device=gw.device).expand(topo.values_shape[0])
    return topo.to_format(probe).gather(gw).contiguous()
