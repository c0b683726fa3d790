"""``SparseConv2d``: everything a sparse conv module shares with ``nn.Conv2d``,
whatever its kind.

A kind's module sets ``FORMAT`` (its format class) and ``OPS`` (its custom
ops) and adds a ``from_dense``; the base holds the conv arguments (padding
modes and string padding as ``nn.Conv2d``), the trainable ``values``, the
saved index tensors and geometry (``meta``), the derived index tensors (rebuilt,
never saved), validated loading, ``to_dense``, ``forward`` and the fused
``activation`` (inference: ``sparsekernels.fuse_epilogues`` sets it). The format
class provides ``INDEX_TENSORS``, ``Topology`` (with ``TENSORS``,
``from_op_args`` and ``sparsity``),
``pruned``, ``from_state_dict``, and per instance ``topology()``,
``params()``, ``meta()``, ``state_dict()``, ``to_dense()`` and ``sparsity``.
"""
from __future__ import annotations

from typing import ClassVar, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..activation import FusedActivation
from ..conv_args import as_int, resolve_conv_args
from ..layer_select import is_depthwise
from ..ops.sparse_conv import (
    InferencePlan, SparseConvOps, _is_compiling, _plain_inference, apply_sparse_conv,
)


class SparseConv2d(FusedActivation, nn.Module):
    FORMAT: ClassVar[type]
    OPS: ClassVar[SparseConvOps]
    DEFAULT_CRITERION: ClassVar[str]  # from_dense's, and sparsify's

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 backend: str = "auto", device=None, dtype=None, *, params: dict):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        groups = as_int(groups, "groups", 1)
        in_channels = as_int(in_channels, "in_channels", 1)
        if in_channels % groups:
            raise ValueError(f"groups: {groups} does not divide in_channels={in_channels}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode: unknown mode {padding_mode!r}")
        # As nn.Conv2d: a non-zeros padding_mode pads the input explicitly
        # (string padding included), then the conv itself pads nothing.
        conv, extra = resolve_conv_args(stride, padding, dilation, groups, (kh, kw))
        (ph, pw), (eh, ew) = conv.padding, extra
        self._mode_padding = (pw, pw + ew, ph, ph + eh)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.padding_mode, self.backend = groups, padding_mode, backend
        empty = self.FORMAT.pruned((out_channels, in_channels // groups, kh, kw), groups=groups,
                                   device=device, dtype=dtype, **params)
        self.values = nn.Parameter(empty.values)
        for name in self.FORMAT.INDEX_TENSORS:
            self.register_buffer(name, getattr(empty, name))
        # The layer's geometry, saved so that a state from a layer of another
        # shape is refused, as nn.Conv2d does.
        self.register_buffer("meta", empty.state_dict()["meta"].to(device))
        for name in self._derived():  # rebuilt from the index tensors, never saved
            self.register_buffer(name, None, persistent=False)
        self.bias = (
            nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype)) if bias else None
        )
        self._set_format(empty)
        self.activation = None

    @classmethod
    def _derived(cls) -> tuple[str, ...]:
        return tuple(f for f in cls.FORMAT.Topology.TENSORS if f not in cls.FORMAT.INDEX_TENSORS)

    @classmethod
    def from_format(cls, fmt, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
                    padding_mode: str = "zeros", backend: str = "auto") -> "SparseConv2d":
        """Wrap an existing (validated) format."""
        cout, cin_g, kh, kw = fmt.shape
        mod = cls(cin_g * fmt.groups, cout, (kh, kw), stride, padding, dilation, fmt.groups,
                  bias is not None, padding_mode, backend=backend, device=fmt.device,
                  dtype=fmt.dtype, **fmt.params())
        mod._set_format(fmt)
        if bias is not None:
            mod.bias.data.copy_(bias.detach())
        return mod

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, sparsity: Optional[float] = None,
                   criterion: Optional[str] = None, mask: Optional[Tensor] = None,
                   seed: Optional[int] = None, backend: str = "auto",
                   **params) -> "SparseConv2d":
        """Prune ``conv`` to this kind: by ``criterion`` (the kind's default
        when None) at ``sparsity``, or keeping exactly the entries of an
        explicit ``mask`` with this kind's structure (``params``: the kind's
        own, e.g. 1xN's ``n``)."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        if (mask is None) == (sparsity is None):
            raise ValueError("from_dense: give exactly one of sparsity= or mask=")
        w, groups = conv.weight.detach(), conv.groups
        if mask is not None:
            fmt = cls.FORMAT.from_mask(w, mask, groups=groups, **params)
        else:
            fmt = cls.FORMAT.from_dense(w, sparsity=sparsity,
                                        criterion=criterion or cls.DEFAULT_CRITERION,
                                        groups=groups, seed=seed, **params)
        return cls.from_format(fmt, conv.bias, conv.stride, conv.padding, conv.dilation,
                               conv.padding_mode, backend)

    def _set_format(self, fmt):
        """Adopt a validated format's tensors (topology and values)."""
        self.__dict__.pop("_plan", None)  # it holds the old ones
        self._meta = fmt.meta()  # python ints: forward reads no tensor data
        self._params = fmt.params()
        for name, value in self._params.items():
            setattr(self, name, value)
        self.values = nn.Parameter(fmt.values.detach().clone(), self.values.requires_grad)
        topo = fmt.topology()
        for name in self.FORMAT.INDEX_TENSORS + self._derived():
            setattr(self, name, getattr(topo, name).clone())

    # ---- what sparsify asks of a kind -----------------------------------
    @classmethod
    def sparsify_options(cls, **options) -> dict:
        """The kind's own ``sparsify`` arguments, checked, defaults filled in."""
        if options:
            raise TypeError(f"sparsify: {cls.__name__} takes no option {sorted(options)}")
        return {}

    @classmethod
    def skip_reason(cls, conv: nn.Conv2d, **options) -> Optional[str]:
        """Why ``sparsify`` leaves ``conv`` dense, or None to convert it."""
        if is_depthwise(conv):
            return "depthwise conv (one input channel per group: each kept entry would be one weight)"
        return None

    @classmethod
    def zeros_options(cls, **options) -> dict:
        """The kind's own ``sparsify(from_zeros=True)`` arguments, checked:
        those its format's ``from_zeros`` takes (none unless the kind says)."""
        if options:
            raise TypeError(f"sparsify: {cls.__name__} takes no option {sorted(options)} with "
                            "from_zeros=True")
        return {}

    @classmethod
    def zeros_skip_reason(cls, conv: nn.Conv2d, **options) -> Optional[str]:
        """Why ``sparsify(from_zeros=True)`` leaves ``conv`` dense before
        reading its zeros, or None: a depthwise conv, as ``skip_reason`` says
        it; the limits of the kind's pruning options do not apply to a
        structure read from zeros."""
        return cls.skip_reason(conv) if is_depthwise(conv) else None

    def describe(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self._params.items())
        return f"{type(self).__name__}({params})"

    # ---- views ----------------------------------------------------------
    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def format(self):
        """The weight as a (validated) format, sharing this module's tensors."""
        state = {name: getattr(self, name) for name in self.FORMAT.INDEX_TENSORS}
        return self.FORMAT.from_state_dict({**state, "values": self.values, "meta": self.meta})

    def topology(self):
        tensors = [getattr(self, f) for f in self.FORMAT.Topology.TENSORS]
        return self.FORMAT.Topology.from_op_args(tensors, self._meta)

    @property
    def sparsity(self) -> float:
        return self.topology().sparsity

    def to_dense(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the decoded weight (pruned weights are 0)."""
        fmt = self.format()
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
            device=fmt.device, dtype=fmt.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(fmt.to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    # ---- forward --------------------------------------------------------
    def forward(self, input: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        """The conv, plus ``residual`` (a tensor of the output's shape: a fused
        residual add, ``sparsekernels.fuse_epilogues``), then the activation
        (FusedActivation), both in the forward op's epilogue (eager, autograd
        and compiled alike; apply_sparse_conv)."""
        # No Module.__getattr__ per tensor (~0.7 us each): this is every call.
        params = self._parameters
        values = params["values"]
        bias = params["bias"] if "bias" in params else self.__dict__.get("bias")
        plan = None if _is_compiling() else self.__dict__.get("_plan")
        if plan is not None and plan.fast is not None:
            # The plan's C++ call checks, per call, what matches and
            # _plain_inference would (__setattr__ drops the plan when a conv
            # argument is rebound): ~10 us of Python less on a small layer.
            out = plan.fast(input, residual, values, bias, self._buffers)
            if out is not None:
                return out
        if (self.padding_mode == "zeros" and isinstance(input, Tensor) and input.dim() == 4
                and _plain_inference(input, values, bias, residual)):
            return self._inference_plan(input.device, values, bias)(input, residual)
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._mode_padding, mode=self.padding_mode)
            padding = 0
        return apply_sparse_conv(self.OPS, input, values, self.topology(), bias,
                                 stride=self.stride, padding=padding, dilation=self.dilation,
                                 groups=self.groups, backend=self.backend, residual=residual,
                                 activation=self.activation)

    def _inference_plan(self, device: torch.device, values: Tensor, bias) -> InferencePlan:
        """The eager inference call of this weight, kept while the weight's
        tensors and the conv arguments stay the same: resolving them costs a
        small layer as much as its kernel (ResNet-56 at batch 1)."""
        d = self.__dict__
        key = (_frozen(d["stride"]), _frozen(d["padding"]), _frozen(d["dilation"]), d["groups"],
               d["backend"], device, d.get("_activation"))
        plan = d.get("_plan")
        if plan is None or not plan.matches(values, bias, self._buffers, key):
            plan = InferencePlan(self.OPS, values, self.topology(), bias, stride=self.stride,
                                 padding=self.padding, dilation=self.dilation,
                                 groups=self.groups, backend=self.backend, device=device,
                                 key=key, activation=self.activation)
            d["_plan"] = plan  # not a submodule, parameter or buffer
        return plan

    def __setattr__(self, name, value):
        if name in _PLAN_ARGS:
            self.__dict__.pop("_plan", None)
        super().__setattr__(name, value)

    def __getstate__(self):
        # A plan is a cache: copies and pickles rebuild their own.
        return {k: v for k, v in super().__getstate__().items() if k != "_plan"}

    def _apply(self, fn, *args, **kwargs):
        # .to() / .cuda() / .half(): the plan would hold the old tensors alive.
        self.__dict__.pop("_plan", None)
        return super()._apply(fn, *args, **kwargs)

    # ---- serialisation --------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        index = self.FORMAT.INDEX_TENSORS
        if prefix + "meta" in state_dict and not torch.equal(
                state_dict[prefix + "meta"].cpu(), self.meta.cpu()):
            error_msgs.append(
                f"size mismatch for {prefix}meta: copying a {type(self).__name__} of geometry "
                f"{state_dict[prefix + 'meta'].tolist()} into one of {self.meta.tolist()}"
            )
            return
        if any(prefix + k in state_dict for k in index):
            # A new topology: the number of kept entries may differ from this
            # module's. It is adopted whole and validated before any kernel
            # sees it; a part of it alone would leave the rest stale.
            keys = (*index, "values", "meta")
            absent = [prefix + k for k in keys if prefix + k not in state_dict]
            if absent:
                raise ValueError(f"state_dict: {absent} missing: {', '.join(keys)} are loaded "
                                 "together")
            fmt = self.FORMAT.from_state_dict({k: state_dict[prefix + k] for k in keys})
            self._set_format(fmt.to(self.values.device, self.values.dtype))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        params = "".join(f", {k}={v}" for k, v in self._params.items())
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}{params}, "
            f"sparsity={self.sparsity:.3f}, backend={self.backend!r}"
            + self._activation_repr()
        )


# What an inference plan is built from besides the weight's tensors: rebinding
# one drops the plan (the tensors it checks per call itself).
_PLAN_ARGS = frozenset(("stride", "padding", "dilation", "groups", "backend", "padding_mode",
                        "activation"))


def _frozen(arg):
    """A conv argument as a plan's key holds it: a list (which the caller may
    still change in place) as a tuple."""
    return tuple(arg) if isinstance(arg, list) else arg
