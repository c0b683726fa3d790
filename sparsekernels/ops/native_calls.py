"""CPU and CUDA backends of the kinds whose ``sparsekernels._C`` functions
take the topology's ``TENSORS`` in order (stripe, pattern): thin calls

    <slug>_forward(x, values, *tensors, bias, cout, kh, kw, stride, padding, dilation, groups,
                   out_min, out_max, residual)
    <slug>_forward_plan(values, *tensors, bias, ... out_max)(x, residual)
    <slug>_grad_input(grad_out, values, *tensors, cin, in_h, in_w, kh, kw, ...)
    <slug>_grad_weight(x, grad_out, *tensors, kh, kw, ...)

Half-precision inputs run in float32 on the CPU (``backends.native_dtype``).
"""
from __future__ import annotations

from types import SimpleNamespace

from .. import _ext
from ..activation import NO_CLAMP
from ..conv_args import Bias, ConvArgs
from .backends import cast, native_dtype


def _conv_args(conv: ConvArgs) -> tuple:
    return list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups


def native_backend(slug: str) -> SimpleNamespace:
    """``forward``, ``grad_input`` and ``grad_weight`` of kind ``slug``."""

    def tensors(topo):
        return tuple(getattr(topo, f) for f in topo.TENSORS)

    def forward(x, values, topo, bias: Bias, conv: ConvArgs, clamp=NO_CLAMP, residual=None):
        work = native_dtype(x)
        out = getattr(_ext.C, f"{slug}_forward")(
            cast(x, work), cast(values, work), *tensors(topo), cast(bias, work), topo.cout,
            *topo.kernel_size, *_conv_args(conv), *clamp, cast(residual, work))
        return cast(out, x.dtype)

    def forward_plan(values, topo, bias: Bias, conv: ConvArgs, clamp=NO_CLAMP):
        # forward with all but the input and the residual bound (see
        # block1xn_native.forward_plan)
        return getattr(_ext.C, f"{slug}_forward_plan")(
            values, *tensors(topo), bias, topo.cout, *topo.kernel_size, *_conv_args(conv),
            *clamp)

    def grad_input(grad_out, values, topo, conv: ConvArgs, in_hw):
        work = native_dtype(grad_out)
        gin = getattr(_ext.C, f"{slug}_grad_input")(
            cast(grad_out, work), cast(values, work), *tensors(topo), topo.cin, in_hw[0],
            in_hw[1], *topo.kernel_size, *_conv_args(conv))
        return cast(gin, grad_out.dtype)

    def grad_weight(x, grad_out, topo, conv: ConvArgs):
        work = native_dtype(x)
        gv = getattr(_ext.C, f"{slug}_grad_weight")(
            cast(x, work), cast(grad_out, work), *tensors(topo), *topo.kernel_size,
            *_conv_args(conv))
        return cast(gv, x.dtype)

    return SimpleNamespace(forward=forward, forward_plan=forward_plan, grad_input=grad_input,
                           grad_weight=grad_weight)
