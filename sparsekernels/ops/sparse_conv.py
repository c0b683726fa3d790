"""One definer for every sparsity kind's custom ops, fake kernels and autograd.

A kind describes itself with a :class:`KindOps` (its topology type, its
operand checks and its backend modules); :func:`define_sparse_conv` registers
three custom ops with one signature shape for every kind::

    sparsekernels::<slug>_conv2d(x, values, Tensor[] topology, int[] meta, bias, residual=None,
                                 *, stride, padding, dilation, groups, backend,
                                 out_min=None, out_max=None)
    sparsekernels::<slug>_conv2d_grad_input(grad_out, values, topology, meta, *,
                                            input_hw, stride, padding, dilation, groups, backend)
    sparsekernels::<slug>_conv2d_grad_weight(x, grad_out, topology, meta, *,
                                             stride, padding, dilation, groups, backend)

``topology`` is the kind's index tensors and ``meta`` its integers, starting
with the dense weight shape ``[Cout, Cin/g, Kh, Kw]`` (the kind's own
parameters follow, e.g. N). The forward's epilogue is fused: ``residual``
(the output's shape) is added, then the sum clamped to ``[out_min, out_max]``
(None: unclamped; a ReLU is ``out_min=0``), so a compiled or trained network
gets the activation and the residual add in the conv's store, as eager
inference does. Backward is the other two ops, so the gradient of a kind is
only as correct as its kernels. Each op checks its operands
(the kind's ``check_*``, or the same checks in C++) before a backend sees
them: the ops are public.
"""
from __future__ import annotations

import functools
import importlib
from typing import Callable, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _ext
from ..activation import (ACTIVATIONS, NO_CLAMP, apply_epilogue, bounds_of, clamp_held,
                          clamp_of, op_bounds)
from ..conv_args import check_conv_args, resolve_conv_args
from . import backends
from .checks import (NATIVE, KindChecks, check_epilogue, check_same_device,
                     check_topology_device, output_shape)


class KindOps(NamedTuple):
    """What a kind plugs into :func:`define_sparse_conv`."""

    slug: str
    # (topology tensors, meta) -> the kind's topology object the backends take
    topology: Callable[[Sequence[Tensor], Sequence[int]], object]
    # backend name -> module (relative to ``sparsekernels``) with forward,
    # grad_input, grad_weight
    backend_modules: dict[str, str]
    checks: KindChecks  # what each op checks before a backend runs


class SparseConvOps(NamedTuple):
    forward: object  # the registered ops (torch._ops.OpOverload)
    grad_input: object
    grad_weight: object
    # The forward op's body, (x, values, topo, bias, conv, backend, clamp=NO_CLAMP,
    # residual=None) -> output, for eager calls that may skip the dispatcher
    # (see apply_sparse_conv).
    run_forward: Callable[..., Tensor]
    # backend name -> the kind's module of that backend
    impl: Callable[[str], object]


def channels_last_like(x: Tensor) -> bool:
    """Whether an output should be channels_last, as PyTorch's conv decides."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(
        memory_format=torch.channels_last)


def _like_input(out: Tensor, x: Tensor) -> Tensor:
    fmt = torch.channels_last if channels_last_like(x) else torch.contiguous_format
    return out.contiguous(memory_format=fmt)


@functools.lru_cache(maxsize=None)
def _module(path: str):
    return importlib.import_module(path, package="sparsekernels")


_LIB = torch.library.Library("sparsekernels", "FRAGMENT")

# Each op's name suffix and schema, one signature shape for every kind.
_SCHEMAS = {
    "": "(Tensor x, Tensor values, Tensor[] topology, int[] meta, Tensor? bias, "
        "Tensor? residual=None, *, int[] stride, int[] padding, int[] dilation, int groups, "
        "str backend, float? out_min=None, float? out_max=None) -> Tensor",
    "_grad_input": "(Tensor grad_out, Tensor values, Tensor[] topology, int[] meta, *, "
                   "int[] input_hw, int[] stride, int[] padding, int[] dilation, int groups, "
                   "str backend) -> Tensor",
    "_grad_weight": "(Tensor x, Tensor grad_out, Tensor[] topology, int[] meta, *, "
                    "int[] stride, int[] padding, int[] dilation, int groups, "
                    "str backend) -> Tensor",
}


def define_sparse_conv(kind: KindOps) -> SparseConvOps:
    """Register ``sparsekernels::<slug>_conv2d`` and its two gradient ops.

    Their kernels and the forward's autograd are C++ (python_bindings/
    sparse_conv_ops.h, registered as ``sparsekernels._C`` loads): a call
    through the dispatcher then costs microseconds, not the ~0.1 ms of
    Python layers a ``torch.library.custom_op`` adds. Those kernels run the
    native backends and hand the others (Triton, the reference) to the op
    bodies below; without the extension the bodies are the kernels and the
    autograd is Python's, the same formula."""
    name = f"{kind.slug}_conv2d"

    def impl(backend: str):
        return _module(kind.backend_modules[backend])

    def prepare(topology, meta, stride, padding, dilation, groups, backend, device):
        conv = check_conv_args(stride, padding, dilation, groups)
        return kind.topology(topology, meta), conv, backends.resolve(backend, device)

    def run_forward(x, values, topo, bias, conv, backend, clamp=NO_CLAMP, residual=None):
        topo = kind.checks.check_forward(backend, x, values, topo, bias, conv)
        check_epilogue(residual, clamp, x, topo, conv)
        if backend in NATIVE:
            out = impl(backend).forward(x, values, topo, bias, conv, clamp, residual)
            return _like_input(out, x)
        out = impl(backend).forward(x, values, topo, bias, conv)
        return _like_input(apply_epilogue(out, clamp, residual), x)

    def forward(x, values, topology, meta, bias, residual=None, *, stride, padding, dilation,
                groups, backend, out_min=None, out_max=None):
        topo, conv, backend = prepare(topology, meta, stride, padding, dilation, groups,
                                      backend, x.device)
        return run_forward(x, values, topo, bias, conv, backend, clamp_of(out_min, out_max),
                           residual)

    def forward_fake(x, values, topology, meta, bias, residual=None, *, stride, padding,
                     dilation, groups, backend, out_min=None, out_max=None):
        topo = kind.topology(topology, meta)
        check_same_device(x, values=values, bias=bias, residual=residual)
        check_topology_device(topo, x)
        conv = check_conv_args(stride, padding, dilation, groups)
        return _like_input(x.new_empty(output_shape(x, topo, conv)), x)

    def grad_input(grad_out, values, topology, meta, *, input_hw, stride, padding, dilation,
                   groups, backend):
        topo, conv, backend = prepare(topology, meta, stride, padding, dilation, groups,
                                      backend, grad_out.device)
        topo = kind.checks.check_grad_input(backend, grad_out, values, topo, conv,
                                            tuple(input_hw))
        return impl(backend).grad_input(grad_out, values, topo, conv, tuple(input_hw)).contiguous()

    def grad_input_fake(grad_out, values, topology, meta, *, input_hw, stride, padding,
                        dilation, groups, backend):
        topo = kind.topology(topology, meta)
        check_same_device(grad_out, values=values)
        check_topology_device(topo, grad_out)
        check_conv_args(stride, padding, dilation, groups)
        return grad_out.new_empty(grad_out.shape[0], topo.cin, *input_hw)

    def grad_weight(x, grad_out, topology, meta, *, stride, padding, dilation, groups, backend):
        topo, conv, backend = prepare(topology, meta, stride, padding, dilation, groups,
                                      backend, x.device)
        topo = kind.checks.check_grad_weight(backend, x, grad_out, topo, conv)
        return impl(backend).grad_weight(x, grad_out, topo, conv).contiguous()

    def grad_weight_fake(x, grad_out, topology, meta, *, stride, padding, dilation, groups,
                         backend):
        topo = kind.topology(topology, meta)
        check_same_device(x, grad_out=grad_out)
        check_topology_device(topo, x)
        check_conv_args(stride, padding, dilation, groups)
        return x.new_empty(topo.values_shape[0])

    bodies = {"": (forward, forward_fake), "_grad_input": (grad_input, grad_input_fake),
              "_grad_weight": (grad_weight, grad_weight_fake)}
    for suffix, (body, fake) in bodies.items():
        _LIB.define(name + suffix + _SCHEMAS[suffix], tags=(torch.Tag.pt2_compliant_tag,))
        torch.library.register_fake(f"sparsekernels::{name}{suffix}", fake, lib=_LIB)
        if _ext.C is not None:
            _ext.C._set_op_python_body(name + suffix, body)
        else:
            _LIB.impl(name + suffix, body, "CompositeExplicitAutograd")
    ops = getattr(torch.ops.sparsekernels, name), getattr(
        torch.ops.sparsekernels, name + "_grad_input"), getattr(
        torch.ops.sparsekernels, name + "_grad_weight")
    forward_op, grad_input_op, grad_weight_op = (op.default for op in ops)
    if _ext.C is None:
        _register_python_autograd(forward_op, grad_input_op, grad_weight_op)
    return SparseConvOps(forward_op, grad_input_op, grad_weight_op, run_forward, impl)


def _register_python_autograd(forward, grad_input, grad_weight) -> None:
    """The ops' autograd without the extension: what ConvFunction and the
    gradient ops' refusal of a derivative (python_bindings/sparse_conv_ops.h)
    do, in Python."""

    def setup_context(ctx, inputs, keyword_only_inputs, output):
        x, values, topology, meta, bias, residual = inputs
        conv = dict(keyword_only_inputs)
        ctx.bounds = conv.pop("out_min"), conv.pop("out_max")
        ctx.clamped = ctx.bounds != (None, None)
        ctx.save_for_backward(x, values, *topology, *((output,) if ctx.clamped else ()))
        ctx.meta, ctx.conv = meta, conv
        ctx.has_bias, ctx.has_residual = bias is not None, residual is not None

    def backward(ctx, grad):
        x, values, *topology = ctx.saved_tensors
        if ctx.clamped:
            *topology, out = topology
            grad = grad.masked_fill(clamp_held(out, *ctx.bounds), 0)
        grad_x = grad_values = grad_bias = grad_residual = None
        if ctx.needs_input_grad[0]:
            grad_x = grad_input(grad, values, topology, ctx.meta, input_hw=list(x.shape[2:]),
                                **ctx.conv)
        if ctx.needs_input_grad[1]:
            grad_values = grad_weight(x, grad, topology, ctx.meta, **ctx.conv)
        if ctx.has_bias and ctx.needs_input_grad[4]:
            grad_bias = grad.sum((0, 2, 3))
        if ctx.has_residual and ctx.needs_input_grad[5]:
            grad_residual = grad
        grads = grad_x, grad_values, [None] * len(topology), None, grad_bias
        # The dispatcher drops an argument left at its default (residual=None)
        # from what backward must match.
        return (*grads, grad_residual) if ctx.has_residual else grads

    torch.library.register_autograd(forward, backward, setup_context=setup_context, lib=_LIB)

    def no_derivative(ctx, grad):
        raise NotImplementedError(
            f"{ctx.op}: the derivative of a gradient (double backward) is not implemented")

    for op in (grad_input, grad_weight):
        torch.library.register_autograd(
            op, no_derivative, lib=_LIB,
            setup_context=lambda ctx, inputs, keyword_only_inputs, output, name=op.name():
            setattr(ctx, "op", name))


_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _check_inputs(x, values: Tensor, bias, topo, groups: int):
    """What ``F.conv2d`` would refuse, named as the user wrote it."""
    if not isinstance(x, Tensor):
        raise TypeError(f"input: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(
            f"input: expected 4-D [N, C, H, W] (or 3-D unbatched), got shape {tuple(x.shape)}"
        )
    if x.dtype not in _DTYPES:
        raise TypeError(f"input: expected one of {_DTYPES}, got {x.dtype}")
    if x.dtype != values.dtype:
        raise TypeError(f"input: dtype {x.dtype} does not match the weight's {values.dtype}")
    if x.device != values.device:
        raise ValueError(f"input: on {x.device} but the weight is on {values.device}")
    if groups != topo.groups:
        raise ValueError(f"groups: {groups} does not match the weight's groups={topo.groups}")
    if x.shape[1] != topo.cin:
        raise ValueError(f"input: expected {topo.cin} channels (weight {list(topo.shape)}, "
                         f"groups={groups}), got {x.shape[1]}")
    if bias is not None and not isinstance(bias, Tensor):
        raise TypeError(f"bias: expected a torch.Tensor or None, got {type(bias).__name__}")


def _fits_output(residual: Tensor, x: Tensor, topo, conv) -> bool:
    """Whether ``residual`` is what a forward op fuses: a tensor of the
    output's shape, dtype and device (others take PyTorch's add)."""
    return (isinstance(residual, Tensor) and residual.dtype == x.dtype
            and residual.device == x.device and residual.shape == output_shape(x, topo, conv))


def apply_sparse_conv(ops: SparseConvOps, input: Tensor, values: Tensor, topo, bias, *,
                      stride, padding, dilation, groups, backend: str,
                      residual: Optional[Tensor] = None,
                      activation: Optional[str] = None) -> Tensor:
    """``F.conv2d`` semantics over a kind's forward op: unbatched input,
    ``'same'``/``'valid'`` padding (asymmetric 'same' pads the input first),
    arguments checked and named; then ``+ residual`` and ``activation`` (a
    key of ``ACTIVATIONS``), fused into the op where the residual is of the
    output's shape and dtype. ``topo`` is the kind's topology (it has
    ``shape``, ``groups``, ``cin`` and ``as_op_args()``); nothing here reads
    tensor data, so modules calling it trace."""
    if isinstance(input, Tensor) and input.dim() == 3:
        if isinstance(residual, Tensor) and residual.dim() == 3:
            residual = residual[None]
        return apply_sparse_conv(ops, input[None], values, topo, bias, stride=stride,
                                 padding=padding, dilation=dilation, groups=groups,
                                 backend=backend, residual=residual, activation=activation)[0]
    conv, extra = resolve_conv_args(stride, padding, dilation, groups, topo.shape[2:])
    _check_inputs(input, values, bias, topo, conv.groups)
    resolved = backends.resolve(backend, input.device)  # fail early with a clear message
    if extra != (0, 0):
        input = F.pad(input, (0, extra[1], 0, extra[0]))
    # A residual that broadcasts or promotes takes PyTorch's add after the
    # op, and the activation after that.
    fused = residual is None or _fits_output(residual, input, topo, conv)
    clamp, fused_residual = (bounds_of(activation), residual) if fused else (NO_CLAMP, None)
    if _plain_inference(input, values, bias, fused_residual):
        # The same checks and kernel as the op, called directly: through the
        # dispatcher the same forward took 3-7% longer on layers of 2-4 ms
        # (ad hoc, interleaved, batch 8; benchmarks/cpu_1xn_kernels.md,
        # twelfth round), more than the op's ~10 us of argument handling.
        out = ops.run_forward(input, values, topo, bias, conv, resolved, clamp, fused_residual)
    else:
        tensors, meta = topo.as_op_args()
        out_min, out_max = op_bounds(clamp)
        out = ops.forward(input, values, tensors, meta, bias, fused_residual,
                          stride=list(conv.stride), padding=list(conv.padding),
                          dilation=list(conv.dilation), groups=conv.groups, backend=backend,
                          out_min=out_min, out_max=out_max)
    if fused:
        return out
    out = out + residual
    return out if activation is None else ACTIVATIONS[activation].apply(out)


class InferencePlan:
    """:func:`apply_sparse_conv`'s eager inference call for one weight, its
    arguments resolved once: the conv arguments, the backend, and the kind's
    topology object. Per call it still checks the input against the weight
    (here, then in the backend: the native backends check every operand in
    C++, the others get the op body's checks), so a plan caches only what
    does not depend on the input. Its holder keeps it while ``matches``.
    ``activation`` (a key of ``ACTIVATIONS``, or None) and a call's
    ``residual`` follow the conv: the native backends take both (1xN adds
    and clamps in its kernel's store), the others' output gets them after."""

    def __init__(self, ops: SparseConvOps, values: Tensor, topo, bias, *, stride, padding,
                 dilation, groups, backend: str, device: torch.device, key: tuple,
                 activation: Optional[str] = None):
        self.conv, self.extra = resolve_conv_args(stride, padding, dilation, groups,
                                                  topo.shape[2:])
        self.resolved = backends.resolve(backend, device)
        self.ops, self.values, self.topo, self.bias, self.key = ops, values, topo, bias, key
        self.held = [(t, t._version) for t in (values, *topo_tensors(topo))]
        self.held_names = topo.TENSORS
        self.bias_version = None if bias is None else bias._version
        # The native backends check every operand in C++ (the same checks as
        # the op body's, by the same names): their forward is called directly.
        self.native = ops.impl(self.resolved).forward if self.resolved in NATIVE else None
        self.clamp = bounds_of(activation)
        self.activation = None if activation is None else ACTIVATIONS[activation]
        # That forward with the weight's arguments bound once (C++): a call
        # it refuses (input or residual not the plain case) returns None and
        # takes the general path below.
        self.bound = None
        if (self.native is not None and self.extra == (0, 0)
                and backends.native_dtype(values) == values.dtype):
            self.bound = ops.impl(self.resolved).forward_plan(values, topo, bias, self.conv,
                                                              self.clamp)
        # A holder's whole plain call, ``fast(x, residual, values, bias,
        # buffers)`` (None: not plain inference on this weight, or a call the
        # bound forward refuses), where nothing it does not watch can change:
        # a conv argument given as a list may be edited in place, which only
        # ``matches`` sees.
        self.fast = None
        if self.bound is not None and not any(isinstance(a, list)
                                              for a in (stride, padding, dilation)):
            self.bound.hold(values, bias, list(topo.TENSORS), topo_tensors(topo))
            self.fast = self.bound.inference

    def matches(self, values: Tensor, bias, buffers: dict, key: tuple) -> bool:
        """Whether the weight is still the same tensors, unmodified (identity
        and version counters), and the arguments ``key`` are the same:
        ``values``, ``bias`` and ``buffers`` (the topology's tensors by
        name) as the holder has them now."""
        if key != self.key or bias is not self.bias or (
                bias is not None and bias._version != self.bias_version):
            return False
        held = self.held
        if held[0][0] is not values or held[0][1] != values._version:
            return False
        for (t, version), name in zip(held[1:], self.held_names):
            u = buffers[name]
            if t is not u or version != u._version:
                return False
        return True

    def __call__(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """The conv of ``x``, plus ``residual``, then the activation."""
        if self.bound is not None:
            out = self.bound(x, residual)
            if out is not None:
                return out
        _check_inputs(x, self.values, self.bias, self.topo, self.conv.groups)
        if self.extra != (0, 0):
            x = F.pad(x, (0, self.extra[1], 0, self.extra[0]))
        if residual is None or _fits_output(residual, x, self.topo, self.conv):
            if self.native is not None:
                return _like_input(self.native(x, self.values, self.topo, self.bias, self.conv,
                                               self.clamp, residual), x)
            return self.ops.run_forward(x, self.values, self.topo, self.bias, self.conv,
                                        self.resolved, self.clamp, residual)
        # A residual that broadcasts or promotes: PyTorch's add, then the activation.
        if self.native is not None:
            out = _like_input(self.native(x, self.values, self.topo, self.bias, self.conv), x)
        else:
            out = self.ops.run_forward(x, self.values, self.topo, self.bias, self.conv,
                                       self.resolved)
        out = out + residual
        return out if self.activation is None else self.activation.apply_(out)


def topo_tensors(topo) -> list[Tensor]:
    return [getattr(topo, f) for f in topo.TENSORS]


_PLAIN = frozenset((Tensor, torch.nn.Parameter))
# Called on every eager forward: looked up once.
_is_compiling = torch.compiler.is_compiling
_is_tracing = torch.jit.is_tracing
_profiler_enabled = torch._C._autograd._profiler_enabled
_dispatch_modes = torch._C._len_torch_dispatch_stack
_function_mode = torch._C._is_torch_function_mode_enabled


def _plain_inference(*operands: Optional[Tensor]) -> bool:
    """Whether a forward call on ``operands`` (None: an absent bias) may run
    a kernel directly: eager, no gradient to record, plain tensors, and no
    mode, tracer, compiler or profiler that must see the op (those all get
    the registered custom op, or PyTorch's own). A planned module's call
    makes the same decision in C++ (``BoundForward.inference``,
    python_bindings/bound_forward.h): a probe added here belongs there too."""
    if (_is_compiling() or _is_tracing() or _profiler_enabled() or _dispatch_modes()
            or _function_mode()):
        return False
    grad = torch.is_grad_enabled()
    for t in operands:
        if t is not None and (type(t) not in _PLAIN or (grad and t.requires_grad)):
            return False
    return True


def sparse_conv2d(ops: SparseConvOps, format_cls: type, name: str) -> Callable[..., Tensor]:
    """The public ``F.conv2d``-like function of a kind: ``name(input, weight,
    bias=None, stride=1, padding=0, dilation=1, groups=1, backend="auto")``
    with ``weight`` a ``format_cls``."""
    def conv2d(input: Tensor, weight, bias: Optional[Tensor] = None, stride=1, padding=0,
               dilation=1, groups: int = 1, backend: str = "auto") -> Tensor:
        if not isinstance(weight, format_cls):
            raise TypeError(f"weight: expected a {format_cls.__name__}, "
                            f"got {type(weight).__name__}")
        return apply_sparse_conv(ops, input, weight.values, weight.topology(), bias,
                                 stride=stride, padding=padding, dilation=dilation,
                                 groups=groups, backend=backend)
    conv2d.__name__ = conv2d.__qualname__ = name
    return conv2d
