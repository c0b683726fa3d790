"""Activations a sparse conv runs in its forward's epilogue (inference).

Each is a clamp of the conv's output, ``min(max(y, lo), hi)`` with NaN kept:
the CPU kernels apply it in registers before the store (``OutputClamp`` in
``csrc/include/sparsekernels/conv_geometry.h``), which saves the separate pass
over the activations that a ReLU module costs (as much memory traffic as a 1x1
conv's own output). Everywhere else (autograd, ``torch.compile``, the CUDA
and Triton backends) the module applies the same function after the op.
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
    which adds a residual (where the module takes one) and applies the
    activation to an output computed without them."""

    @property
    def activation(self) -> Optional[str]:
        return self.__dict__.get("_activation")

    @activation.setter
    def activation(self, name: Optional[str]) -> None:
        self.__dict__["_activation"] = check_activation(name)

    def _activated(self, out: Tensor, residual: Optional[Tensor] = None) -> Tensor:
        if residual is not None:
            out = out + residual
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
