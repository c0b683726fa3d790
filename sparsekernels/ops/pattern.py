"""The pattern-sparse conv2d: its custom ops and public function.

``pattern_conv2d`` is ``F.conv2d`` with a :class:`Pattern` weight. The custom
ops ``sparsekernels::pattern_conv2d{,_grad_input,_grad_weight}`` come from the
generic definer (:mod:`.sparse_conv`); grad-weight is computed only at kept
positions, so pruned positions and kernels stay pruned.
"""
from __future__ import annotations

from .. import _ext
from ..formats.pattern import Pattern, PatternTopology
from .checks import KindChecks
from .sparse_conv import KindOps, define_sparse_conv, sparse_conv2d


def _native_check(topo: PatternTopology) -> list:
    return _ext.C.pattern_check_topology(*(getattr(topo, f) for f in topo.TENSORS), topo.cout,
                                         topo.cin, *topo.kernel_size, topo.groups)


OPS = define_sparse_conv(KindOps(
    slug="pattern",
    topology=PatternTopology.from_op_args,
    backend_modules={
        "reference": ".ops.reference",
        "cpu": ".ops.pattern_native",
        "cuda": ".ops.pattern_native",
        "triton": ".triton.pattern",
    },
    checks=KindChecks(native_check=_native_check),
))


pattern_conv2d = sparse_conv2d(OPS, Pattern, "pattern_conv2d")
pattern_conv2d.__doc__ = """``F.conv2d`` with a pattern-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned positions do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend propagates it).
    """
