"""CPU and CUDA backends of the stripe conv: thin calls into ``sparsekernels._C``.

The C++ CPU kernels take float32/float64; half-precision inputs run there in
float32 (the same fp32 accumulation the CUDA kernels use) and are cast back.
"""
from __future__ import annotations

import torch

from .._ext import C
from ..conv_args import Bias, ConvArgs
from ..formats.stripe import StripeTopology

_CPU_NATIVE = (torch.float32, torch.float64)


def _cpu_dtype(t: torch.Tensor) -> torch.dtype:
    return t.dtype if (t.is_cuda or t.dtype in _CPU_NATIVE) else torch.float32


def _cast(t, dtype):
    return None if t is None else t.to(dtype)


def _topology_args(topo: StripeTopology):
    return (topo.row_ptr, topo.tap_idx, topo.tap_ptr, topo.stripe_idx, topo.stripe_row)


def forward(x, values, topo: StripeTopology, bias: Bias, conv: ConvArgs):
    work = _cpu_dtype(x)
    out = C.stripe_forward(
        _cast(x, work), _cast(values, work), *_topology_args(topo), _cast(bias, work),
        topo.cout, *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return out.to(x.dtype)


def grad_input(grad_out, values, topo: StripeTopology, conv: ConvArgs, in_hw):
    work = _cpu_dtype(grad_out)
    gin = C.stripe_grad_input(
        _cast(grad_out, work), _cast(values, work), *_topology_args(topo), topo.cin, in_hw[0],
        in_hw[1], *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return gin.to(grad_out.dtype)


def grad_weight(x, grad_out, topo: StripeTopology, conv: ConvArgs):
    work = _cpu_dtype(x)
    gv = C.stripe_grad_weight(
        _cast(x, work), _cast(grad_out, work), *_topology_args(topo), *topo.kernel_size,
        list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups,
    )
    return gv.to(x.dtype)
