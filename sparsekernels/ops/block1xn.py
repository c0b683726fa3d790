"""The 1xN block-sparse conv2d: its custom ops and public function.

``block1xn_conv2d`` is ``F.conv2d`` with a :class:`Block1xN` weight. The
custom ops ``sparsekernels::block1xn_conv2d{,_grad_input,_grad_weight}`` come
from the generic definer (:mod:`.sparse_conv`): fake kernels, so
``torch.compile`` traces them, and autograd whose backward is the other two
ops (grad-input is the transposed sparse conv on the same topology;
grad-weight is computed only at kept blocks, so pruned weights stay pruned).
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from ..formats.block1xn import Block1xN, BlockTopology
from .. import _ext
from .checks import KindChecks
from .sparse_conv import KindOps, apply_sparse_conv, define_sparse_conv

def _native_check(topo: BlockTopology):
    _ext.C.block1xn_check_topology(*(getattr(topo, f) for f in topo.TENSORS), topo.n,
                                   topo.rows_per_group, topo.cout, topo.cin, topo.groups)


OPS = define_sparse_conv(KindOps(
    slug="block1xn",
    topology=BlockTopology.from_op_args,
    backend_modules={
        "reference": ".ops.reference",
        "cpu": ".ops.block1xn_native",
        "cuda": ".ops.block1xn_native",
        "triton": ".triton.block1xn",
    },
    checks=KindChecks(native_check=_native_check),
))


def block1xn_conv2d(
    input: Tensor,
    weight: Block1xN,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """``F.conv2d`` with a 1xN block-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned weights do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend, which multiplies by stored
    zeros, propagates it).
    """
    if not isinstance(weight, Block1xN):
        raise TypeError(f"weight: expected a Block1xN, got {type(weight).__name__}")
    return apply_sparse_conv(OPS, input, weight.values, weight.topology(), bias,
                             stride=stride, padding=padding, dilation=dilation, groups=groups,
                             backend=backend)
