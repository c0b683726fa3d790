"""Activations a sparse conv runs in its forward's epilogue (inference).

Each is a clamp of the conv's output, ``min(max(y, lo), hi)`` with NaN kept:
the CPU kernels apply it in registers before the store (``OutputClamp`` in
``csrc/include/sparsekernels/conv_geometry.h``), which saves the separate pass
over the activations that a ReLU module costs (as much memory traffic as a 1x1
conv's own output). The forward ops take the clamp as ``out_min`` /
``out_max`` (None: that side open) after a fused ``residual``, so autograd
and ``torch.compile`` graphs get it in the kernel's store too; a backend
without an epilogue of its own (Triton, the reference) applies
:func:`apply_epilogue` to its output.
``FusedActivation`` is the slot a conv module holds one in;
``fuse_epilogues`` fills it from the model's graph.
"""
from __future__ import annotations

import functools
import math
from typing import Callable, NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class Activation(NamedTuple):
    bounds: tuple[float, float]  # the clamp the kernels apply: (out_min, out_max)
    apply: Callable[[Tensor], Tensor]  # the same, as a torch function
    apply_: Callable[[Tensor], Tensor]  # ... in place
    module: type  # the nn module it stands for
    functions: tuple  # the torch functions it stands for (fuse_epilogues)


ACTIVATIONS = {
    "relu": Activation((0.0, math.inf), F.relu, torch.relu_, nn.ReLU,
                       (F.relu, torch.relu, torch.relu_)),
    "relu6": Activation((0.0, 6.0), F.relu6, functools.partial(F.relu6, inplace=True), nn.ReLU6,
                        (F.relu6,)),
}
NO_CLAMP = (-math.inf, math.inf)


def clamp_of(out_min: Optional[float], out_max: Optional[float]) -> tuple[float, float]:
    """The forward ops' ``out_min`` / ``out_max`` (None: unclamped) as a clamp."""
    return (-math.inf if out_min is None else float(out_min),
            math.inf if out_max is None else float(out_max))


def op_bounds(clamp: tuple[float, float]) -> tuple[Optional[float], Optional[float]]:
    """A clamp as the forward ops take it: ``(out_min, out_max)``, None for an open side."""
    lo, hi = clamp
    return (None if lo == -math.inf else lo), (None if hi == math.inf else hi)


def apply_epilogue(out: Tensor, clamp: tuple[float, float], residual: Optional[Tensor]) -> Tensor:
    """``out + residual`` clamped to ``clamp`` (NaN kept), in place on
    ``out``, a backend's fresh output (a third of an out-of-place add's time)."""
    if residual is not None:
        out.add_(residual)
    lo, hi = op_bounds(clamp)
    return out if (lo, hi) == (None, None) else out.clamp_(lo, hi)


def clamp_held(out: Tensor, out_min: Optional[float], out_max: Optional[float]) -> Tensor:
    """Where a clamp holds ``out`` at one of its bounds: no gradient flows
    there (ReLU's and hardtanh's backward, read from the output; NaN passes)."""
    below = None if out_min is None else out <= out_min
    above = None if out_max is None else out >= out_max
    return above if below is None else below if above is None else below | above


def check_activation(name: Optional[str]) -> Optional[str]:
    if name is not None and name not in ACTIVATIONS:
        raise ValueError(f"activation: expected None or one of {sorted(ACTIVATIONS)}, "
                         f"got {name!r}")
    return name


def bounds_of(name: Optional[str]) -> tuple[float, float]:
    return NO_CLAMP if name is None else ACTIVATIONS[name].bounds


class FusedActivation:
    """Mixin of a conv module whose forward can end in an activation: the
    ``activation`` slot (a key of ``ACTIVATIONS``, or None) and ``_activated``,
    which applies the activation to an output computed without it (the NCHW
    kernels' modules off their fused path; the sparse modules pass it to
    their forward op)."""

    @property
    def activation(self) -> Optional[str]:
        return self.__dict__.get("_activation")

    @activation.setter
    def activation(self, name: Optional[str]) -> None:
        self.__dict__["_activation"] = check_activation(name)

    def _activated(self, out: Tensor) -> Tensor:
        name = self.activation
        return out if name is None else ACTIVATIONS[name].apply(out)

    def _activation_repr(self) -> str:
        return f", activation={self.activation!r}" if self.activation else ""


class DenseEpilogue(nn.Module):
    """``conv``, then the residual it is called with added, then activation
    ``name`` (None: none), in plain PyTorch ops: the reference of a fused
    conv (``sparsekernels.fuse_epilogues``)."""

    def __init__(self, conv: nn.Module, name: Optional[str]):
        super().__init__()
        self.conv, self.activation = conv, check_activation(name)

    def forward(self, x: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        out = self.conv(x)
        if residual is not None:
            out = out + residual
        return out if self.activation is None else ACTIVATIONS[self.activation].apply(out)
