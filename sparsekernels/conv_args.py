"""Conv2d arguments as every sparse conv receives them, for every kind.

Backends never see string padding or asymmetric padding: the public op
resolves those (see ``resolve_padding``) and pads the input itself, so each
kernel only handles symmetric zero padding.
"""
from __future__ import annotations

import operator
from typing import NamedTuple, Optional

import torch


class ConvArgs(NamedTuple):
    stride: tuple[int, int]
    padding: tuple[int, int]  # symmetric zero padding (top/bottom, left/right)
    dilation: tuple[int, int]
    groups: int


def out_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def output_hw(
    in_hw: tuple[int, int], kernel: tuple[int, int], conv: ConvArgs
) -> tuple[int, int]:
    return (
        out_size(in_hw[0], kernel[0], conv.stride[0], conv.padding[0], conv.dilation[0]),
        out_size(in_hw[1], kernel[1], conv.stride[1], conv.padding[1], conv.dilation[1]),
    )


Bias = Optional[torch.Tensor]


INT32_MAX = 2**31 - 1  # the kernels' geometry fields are int32


def as_int(value, name: str, minimum: int, maximum: int = INT32_MAX) -> int:
    """``value`` as a Python int in [minimum, maximum], accepting what
    ``F.conv2d`` accepts (ints, numpy integers, 0-d integer tensors), and
    refusing floats, bools and None with a message naming ``name``."""
    if type(value) is not int:  # a plain int, the case on every call, skips this
        value = _integral(value, name)
    if not minimum <= value <= maximum:
        raise ValueError(f"{name}: expected an int in [{minimum}, {maximum}], got {value}")
    return value


def _integral(value, name: str) -> int:
    if isinstance(value, bool) or (
        isinstance(value, torch.Tensor) and (value.dim() or value.is_floating_point())
    ):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {value!r}") from None


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    if isinstance(value, (tuple, list)) or (isinstance(value, torch.Tensor) and value.dim()):
        items = list(value)
        if len(items) != 2:
            raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    else:
        items = [value, value]
    return tuple(as_int(v, name, minimum) for v in items)


def check_conv_args(stride, padding, dilation, groups) -> ConvArgs:
    """The custom ops' conv arguments (pairs of ints, no strings) as bounded
    ``ConvArgs``: what every backend may rely on."""
    return ConvArgs(
        _pair(stride, "stride", 1), _pair(padding, "padding", 0), _pair(dilation, "dilation", 1),
        as_int(groups, "groups", 1),
    )


def resolve_conv_args(
    stride, padding, dilation, groups: int, kernel: tuple[int, int]
) -> tuple[ConvArgs, tuple[int, int]]:
    """Normalise conv arguments as ``F.conv2d`` accepts them.

    Returns the symmetric ``ConvArgs`` and the extra (bottom, right) zero
    padding that PyTorch's ``'same'`` needs for an even receptive field; the
    caller pads the input by that before calling a backend.
    """
    stride = _pair(stride, "stride", 1)
    dilation = _pair(dilation, "dilation", 1)
    groups = as_int(groups, "groups", 1)
    extra = (0, 0)
    if isinstance(padding, str):
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1):
                raise ValueError("padding: 'same' is not supported for strided convolutions")
            total = [d * (k - 1) for d, k in zip(dilation, kernel)]
            padding = (total[0] // 2, total[1] // 2)
            extra = (total[0] - 2 * padding[0], total[1] - 2 * padding[1])
        else:
            raise ValueError(f"padding: expected 'same', 'valid' or ints, got {padding!r}")
    padding = _pair(padding, "padding", 0)
    return ConvArgs(stride, padding, dilation, groups), extra
