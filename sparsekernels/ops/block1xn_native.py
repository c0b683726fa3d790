"""CPU and CUDA backends of the 1xN conv: thin calls into ``sparsekernels._C``.

Half-precision inputs run in float32 on the CPU (``backends.native_dtype``).
"""
from __future__ import annotations

from .._ext import C
from ..activation import NO_CLAMP
from ..conv_args import Bias, ConvArgs
from ..formats.block1xn import BlockTopology
from .backends import cast, native_dtype


def forward(x, values, topo: BlockTopology, bias: Bias, conv: ConvArgs, clamp=NO_CLAMP,
            residual=None):
    work = native_dtype(x)
    out = C.block1xn_forward(
        cast(x, work), cast(values, work), topo.row_ptr, topo.col_idx, cast(bias, work),
        topo.n, topo.rows_per_group, topo.cout, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups, *clamp, cast(residual, work),
    )
    return cast(out, x.dtype)


def forward_plan(values, topo: BlockTopology, bias: Bias, conv: ConvArgs, clamp=NO_CLAMP):
    """``forward`` with every argument but the input and the residual bound:
    ``plan(x, residual=None)``, None where ``forward`` would refuse the call
    (``values`` must be of a dtype the kernels compute in)."""
    return C.block1xn_forward_plan(
        values, topo.row_ptr, topo.col_idx, bias, topo.n, topo.rows_per_group, topo.cout,
        list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups, *clamp)


def grad_input(grad_out, values, topo: BlockTopology, conv: ConvArgs, in_hw):
    work = native_dtype(grad_out)
    gin = C.block1xn_grad_input(
        cast(grad_out, work), cast(values, work), topo.row_ptr, topo.col_idx, topo.col_ptr,
        topo.block_idx, topo.block_row, topo.n, topo.rows_per_group, topo.cin, in_hw[0],
        in_hw[1], list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups,
    )
    return cast(gin, grad_out.dtype)


def grad_weight(x, grad_out, topo: BlockTopology, conv: ConvArgs):
    work = native_dtype(x)
    gv = C.block1xn_grad_weight(
        cast(x, work), cast(grad_out, work), topo.row_ptr, topo.col_idx, topo.n,
        topo.rows_per_group, *topo.kernel_size, list(conv.stride), list(conv.padding),
        list(conv.dilation), conv.groups,
    )
    return cast(gv, x.dtype)
