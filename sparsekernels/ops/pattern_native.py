"""CPU and CUDA backends of the pattern conv: thin calls into ``sparsekernels._C``.

Half-precision inputs run in float32 on the CPU (``backends.native_dtype``).
"""
from __future__ import annotations

from .._ext import C
from ..conv_args import Bias, ConvArgs
from ..formats.pattern import PatternTopology
from .backends import cast, native_dtype


def _topology_args(topo: PatternTopology):
    return tuple(getattr(topo, f) for f in topo.TENSORS)


def forward(x, values, topo: PatternTopology, bias: Bias, conv: ConvArgs):
    work = native_dtype(x)
    out = C.pattern_forward(
        cast(x, work), cast(values, work), *_topology_args(topo), cast(bias, work),
        topo.cout, *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return out.to(x.dtype)


def grad_input(grad_out, values, topo: PatternTopology, conv: ConvArgs, in_hw):
    work = native_dtype(grad_out)
    gin = C.pattern_grad_input(
        cast(grad_out, work), cast(values, work), *_topology_args(topo), topo.cin, in_hw[0],
        in_hw[1], *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return gin.to(grad_out.dtype)


def grad_weight(x, grad_out, topo: PatternTopology, conv: ConvArgs):
    work = native_dtype(x)
    gv = C.pattern_grad_weight(
        cast(x, work), cast(grad_out, work), *_topology_args(topo), *topo.kernel_size,
        list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups,
    )
    return gv.to(x.dtype)
