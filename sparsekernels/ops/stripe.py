"""The stripe-sparse conv2d: its custom ops and public function.

``stripe_conv2d`` is ``F.conv2d`` with a :class:`Stripe` weight. The custom
ops ``sparsekernels::stripe_conv2d{,_grad_input,_grad_weight}`` come from the
generic definer (:mod:`.sparse_conv`); grad-weight is computed only at kept
stripes, so pruned stripes stay pruned.
"""
from __future__ import annotations

from .. import _ext
from ..formats.stripe import Stripe, StripeTopology
from .checks import KindChecks
from .sparse_conv import KindOps, define_sparse_conv, sparse_conv2d


def _native_check(topo: StripeTopology) -> list:
    return _ext.C.stripe_check_topology(*(getattr(topo, f) for f in topo.TENSORS), topo.cout,
                                        topo.cin, *topo.kernel_size, topo.groups)


OPS = define_sparse_conv(KindOps(
    slug="stripe",
    topology=StripeTopology.from_op_args,
    backend_modules={
        "reference": ".ops.reference",
        "cpu": ".ops.stripe_native",
        "cuda": ".ops.stripe_native",
        "triton": ".triton.stripe",
    },
    checks=KindChecks(native_check=_native_check),
))


stripe_conv2d = sparse_conv2d(OPS, Stripe, "stripe_conv2d")
stripe_conv2d.__doc__ = """``F.conv2d`` with a stripe-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned stripes do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend propagates it).
    """
