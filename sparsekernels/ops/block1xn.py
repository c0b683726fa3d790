"""The 1xN block-sparse conv2d: its custom ops and public function.

``block1xn_conv2d`` is ``F.conv2d`` with a :class:`Block1xN` weight. The
custom ops ``sparsekernels::block1xn_conv2d{,_grad_input,_grad_weight}`` come
from the generic definer (:mod:`.sparse_conv`): fake kernels, so
``torch.compile`` traces them, and autograd whose backward is the other two
ops (grad-input is the transposed sparse conv on the same topology;
grad-weight is computed only at kept blocks, so pruned weights stay pruned).
"""
from __future__ import annotations

from ..formats.block1xn import Block1xN, BlockTopology
from .. import _ext
from .checks import KindChecks
from .sparse_conv import KindOps, define_sparse_conv, sparse_conv2d

def _native_check(topo: BlockTopology) -> list:
    return _ext.C.block1xn_check_topology(*(getattr(topo, f) for f in topo.TENSORS), topo.n,
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


block1xn_conv2d = sparse_conv2d(OPS, Block1xN, "block1xn_conv2d")
block1xn_conv2d.__doc__ = """``F.conv2d`` with a 1xN block-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned weights do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend, which multiplies by stored
    zeros, propagates it).
    """
