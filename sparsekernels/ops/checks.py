"""What every kind's custom ops check before a backend sees their operands.

The custom ops (``torch.ops.sparsekernels.<slug>_conv2d*``) are public entry
points: anyone can call them with tensors that never went through a format.
So each op body checks its operands before dispatching: the O(1) shape,
dtype and device checks here for every backend, then the kind's whole
topology (linear in the kept entries: microseconds, invisible next to the
conv) once. The native backend's C++ entry points (``python_bindings/``)
check the topology themselves, since ``sparsekernels._C`` is reachable too;
for the Triton and reference backends the kind's ``check_topology`` is
called from here. Messages name the argument.

A kind's checks module is :class:`KindChecks` bound to its topology check
and its ``values`` shape. The ``check_*`` methods return the topology the
backend must use (for Triton on a GPU, the checked private copies).
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional

import torch
from torch import Tensor

from .. import _ext
from ..conv_args import ConvArgs, as_int, output_hw

NATIVE = ("cpu", "cuda")


def _check_like(name: str, t: Tensor, like: Tensor):
    """``t`` of ``like``'s dtype (else a TypeError) and device (else a
    ValueError), as glue::check_like words it."""
    if t.dtype != like.dtype:
        raise TypeError(f"{name}: expected dtype {like.dtype}, got {t.dtype}")
    check_same_device(like, **{name: t})


def output_shape(x: Tensor, topo, conv: ConvArgs) -> tuple:
    """[N, Cout, OH, OW] of the conv of ``x`` by ``topo``'s weight."""
    return (x.shape[0], topo.cout, *output_hw(tuple(x.shape[2:]), topo.kernel_size, conv))


def _check_activation(name: str, t: Tensor, like: Tensor):
    if t.dim() != 4:
        raise ValueError(f"{name}: expected a 4-D tensor, got shape {tuple(t.shape)}")
    _check_like(name, t, like)


def _check_bias(bias: Optional[Tensor], like: Tensor, cout: int):
    if bias is None:
        return
    _check_like("bias", bias, like)
    if tuple(bias.shape) != (cout,):
        raise ValueError(f"bias: expected shape [{cout}], got {list(bias.shape)}")


def check_same_device(like: Tensor, **operands: Optional[Tensor]):
    """Every operand (None: absent) on ``like``'s device, else a ValueError
    naming it. The fake kernels check this too: a call mixing a meta tensor
    with real ones is dispatched to them, and would return a meta tensor."""
    for name, t in operands.items():
        if t is not None and t.device != like.device:
            raise ValueError(f"{name}: expected a tensor on {like.device}, got {t.device}")


def check_topology_device(topo, like: Tensor):
    """Every index tensor on the activations' device: a backend that trusts
    the topology (Triton, the reference) would otherwise hand a kernel host
    pointers with device data, or the reverse. The compiled topology check
    only compares the index tensors with one another."""
    check_same_device(like, **{name: getattr(topo, name) for name in topo.TENSORS})


def _check_channels(name: str, t: Tensor, channels: int):
    if t.shape[1] != channels:
        raise ValueError(f"{name}: expected {channels} channels, got {t.shape[1]}")


def _check_output_size(in_hw, topo, conv: ConvArgs):
    want = output_hw(tuple(in_hw), topo.kernel_size, conv)
    if min(want) < 1:
        raise ValueError(f"input: spatial size {tuple(in_hw)} is too small for kernel "
                         f"{topo.kernel_size} with padding {conv.padding} and dilation "
                         f"{conv.dilation}")
    return want


def _check_spatial(grad_out: Tensor, in_hw: tuple[int, int], topo, conv: ConvArgs):
    want = _check_output_size(in_hw, topo, conv)
    if tuple(grad_out.shape[2:]) != want:
        raise ValueError(f"grad_out: spatial size {tuple(grad_out.shape[2:])} does not match "
                         f"the convolution's output {want}")


def _check_groups(topo, conv: ConvArgs):
    if conv.groups != topo.groups:
        raise ValueError(f"groups: {conv.groups} does not match the weight's groups={topo.groups}")


def check_topology(topo, native_check: Optional[Callable] = None):
    """``topo`` as a kernel may read it, or raise. With the extension built,
    the kind's compiled check (``native_check(topo)``), which returns the
    index tensors to read: on a GPU, private copies checked once per
    topology (python_bindings/device_topology_cache.h), so no call syncs
    and no later edit of the caller's tensors reaches a kernel. Without it,
    the format's own validation of the saved index tensors plus equality of
    the derived ones (e.g. a transposed view) with what the format derives."""
    if native_check is not None and _ext.C is not None:
        return topo._replace(**dict(zip(topo.TENSORS, native_check(topo))))
    shape, _ = topo.values_shape
    probe = torch.zeros((), device=topo.row_ptr.device).expand(shape)  # only its shape is read
    want = topo.to_format(probe).topology()
    derived = [f for f in topo.TENSORS if f not in topo.INDEX_TENSORS]
    if not all(torch.equal(getattr(topo, k).cpu(), getattr(want, k).cpu()) for k in derived):
        raise ValueError(f"{'/'.join(derived)}: not the view derived from "
                         f"{'/'.join(topo.INDEX_TENSORS)}")
    return topo


def check_epilogue(residual: Optional[Tensor], clamp: tuple[float, float], x: Tensor, topo,
                   conv: ConvArgs):
    """A forward's fused epilogue: ``residual`` (or None) of the output's
    shape, dtype and device; ``clamp`` = (out_min, out_max), ordered, neither
    NaN (-inf / inf: that side unclamped). The C++ entry points' messages."""
    lo, hi = clamp
    if math.isnan(lo) or math.isnan(hi) or lo > hi:
        raise ValueError(f"out_min, out_max: expected out_min <= out_max, neither NaN, "
                         f"got {lo:g}, {hi:g}")
    if residual is None:
        return
    _check_like("residual", residual, x)
    want = list(output_shape(x, topo, conv))
    if list(residual.shape) != want:
        raise ValueError(f"residual: expected the output's shape {want}, "
                         f"got {list(residual.shape)}")


class KindChecks(NamedTuple):
    """A kind's operand checks: ``check_forward``, ``check_grad_input`` and
    ``check_grad_weight`` (called by the op definer). ``native_check(topo)``
    is the kind's compiled topology check; the topology gives ``values_shape``
    (shape, "[dim names]"), ``to_format(values)``, ``TENSORS`` and
    ``INDEX_TENSORS``."""

    native_check: Callable[[object], list]

    def check_topology(self, topo):
        return check_topology(topo, self.native_check)

    def _topology_for(self, backend: str, topo, like: Tensor):
        """What ``backend`` may read: the native backends check the topology
        in their C++ entry points; the others get it checked here."""
        check_topology_device(topo, like)
        return topo if backend in NATIVE else self.check_topology(topo)

    def _check_values(self, values: Tensor, like: Tensor, topo):
        if values.dim() < 1:
            raise ValueError(f"values: expected a tensor, got shape {tuple(values.shape)}")
        _check_like("values", values, like)
        want, names = topo.values_shape
        if tuple(values.shape) != want:
            raise ValueError(f"values: expected shape {names} = {list(want)}, "
                             f"got {list(values.shape)}")

    def check_forward(self, backend: str, x: Tensor, values: Tensor, topo,
                      bias: Optional[Tensor], conv: ConvArgs):
        _check_groups(topo, conv)
        _check_activation("input", x, x)
        _check_channels("input", x, topo.cin)
        self._check_values(values, x, topo)
        _check_bias(bias, x, topo.cout)
        _check_output_size(x.shape[2:], topo, conv)
        return self._topology_for(backend, topo, x)

    def check_grad_input(self, backend: str, grad_out: Tensor, values: Tensor, topo,
                         conv: ConvArgs, in_hw: tuple[int, int]):
        _check_groups(topo, conv)
        _check_activation("grad_out", grad_out, grad_out)
        _check_channels("grad_out", grad_out, topo.cout)
        self._check_values(values, grad_out, topo)
        in_hw = (as_int(in_hw[0], "input_hw", 1), as_int(in_hw[1], "input_hw", 1))
        _check_spatial(grad_out, in_hw, topo, conv)
        return self._topology_for(backend, topo, grad_out)

    def check_grad_weight(self, backend: str, x: Tensor, grad_out: Tensor, topo,
                          conv: ConvArgs):
        _check_groups(topo, conv)
        _check_activation("input", x, x)
        _check_activation("grad_out", grad_out, x)
        _check_channels("input", x, topo.cin)
        _check_channels("grad_out", grad_out, topo.cout)
        if grad_out.shape[0] != x.shape[0]:
            raise ValueError(f"grad_out: batch {grad_out.shape[0]} does not match the input's "
                             f"{x.shape[0]}")
        _check_spatial(grad_out, tuple(x.shape[2:]), topo, conv)
        return self._topology_for(backend, topo, x)
