"""CPU and CUDA backends of the stripe conv: thin calls into ``sparsekernels._C``.

Half-precision inputs run in float32 on the CPU (``backends.native_dtype``).
"""
from __future__ import annotations

from .._ext import C
from ..conv_args import Bias, ConvArgs
from ..formats.stripe import StripeTopology
from .backends import cast, native_dtype


def _topology_args(topo: StripeTopology):
    return (topo.row_ptr, topo.tap_idx, topo.tap_ptr, topo.stripe_idx, topo.stripe_row)


def forward(x, values, topo: StripeTopology, bias: Bias, conv: ConvArgs):
    work = native_dtype(x)
    out = C.stripe_forward(
        cast(x, work), cast(values, work), *_topology_args(topo), cast(bias, work),
        topo.cout, *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return out.to(x.dtype)


def grad_input(grad_out, values, topo: StripeTopology, conv: ConvArgs, in_hw):
    work = native_dtype(grad_out)
    gin = C.stripe_grad_input(
        cast(grad_out, work), cast(values, work), *_topology_args(topo), topo.cin, in_hw[0],
        in_hw[1], *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return gin.to(grad_out.dtype)


def grad_weight(x, grad_out, topo: StripeTopology, conv: ConvArgs):
    work = native_dtype(x)
    gv = C.stripe_grad_weight(
        cast(x, work), cast(grad_out, work), *_topology_args(topo), *topo.kernel_size,
        list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups,
    )
    return gv.to(x.dtype)
