"""The plain values every backend of a sparse conv receives.

Backends never see string padding or asymmetric padding: the public op
resolves those (see ``resolve_padding``) and pads the input itself, so each
kernel only handles symmetric zero padding.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class ConvArgs(NamedTuple):
    stride: tuple[int, int]
    padding: tuple[int, int]  # symmetric zero padding (top/bottom, left/right)
    dilation: tuple[int, int]
    groups: int


class BlockTopology(NamedTuple):
    """Index tensors of a 1xN weight (see sparsekernels/formats/block_1xn.py).

    ``row_ptr``/``col_idx`` are the block-CSR; ``col_ptr``/``block_idx``/
    ``block_row`` its transpose (per input channel, the blocks that read it),
    used by grad-input. All int32 and on the weight's device.
    """

    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    col_ptr: torch.Tensor
    block_idx: torch.Tensor
    block_row: torch.Tensor
    n: int
    rows_per_group: int


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


def _pair(value, name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair):
        raise ValueError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
    return pair


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
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups: expected a positive int, got {groups!r}")
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
