"""The stripe-sparse conv2d: its custom ops and public function.

``stripe_conv2d`` is ``F.conv2d`` with a :class:`Stripe` weight. The custom
ops ``sparsekernels::stripe_conv2d{,_grad_input,_grad_weight}`` come from the
generic definer (:mod:`.sparse_conv`); grad-weight is computed only at kept
stripes, so pruned stripes stay pruned.
"""
from __future__ import annotations

from typing import Optional

from torch import Tensor

from .. import _ext
from ..formats.stripe import Stripe, StripeTopology
from .checks import KindChecks
from .sparse_conv import KindOps, apply_sparse_conv, define_sparse_conv


def _native_check(topo: StripeTopology):
    _ext.C.stripe_check_topology(*(getattr(topo, f) for f in topo.TENSORS), topo.cout,
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


def stripe_conv2d(
    input: Tensor,
    weight: Stripe,
    bias: Optional[Tensor] = None,
    stride=1,
    padding=0,
    dilation=1,
    groups: int = 1,
    backend: str = "auto",
) -> Tensor:
    """``F.conv2d`` with a stripe-sparse weight.

    Same arguments and output as ``torch.nn.functional.conv2d`` (including
    ``padding='same'/'valid'`` and unbatched 3-D input); ``backend`` is one of
    ``"auto" | "cpu" | "cuda" | "triton" | "reference"``. Pruned stripes do
    not exist: a NaN/Inf input that meets only pruned weights does not reach
    the output (the dense ``reference`` backend propagates it).
    """
    if not isinstance(weight, Stripe):
        raise TypeError(f"weight: expected a Stripe, got {type(weight).__name__}")
    return apply_sparse_conv(OPS, input, weight.values, weight.topology(), bias,
                             stride=stride, padding=padding, dilation=dilation, groups=groups,
                             backend=backend)
