"""``DepthwiseConv2d``: a dense depthwise ``nn.Conv2d`` (one filter per
channel) whose eager CPU inference runs the library's NCHW kernel
(``csrc/cpu/depthwise``), its activation fused.

A pruned MobileNet keeps its depthwise convs dense (``sparsify`` skips them:
each kept entry would be one weight) between sparse 1x1 convs that run in
NCHW. oneDNN's depthwise conv is 2-3x slower in NCHW than in channels_last,
and converting around each one costs more than it saves, so at 90% sparsity
the dense depthwise convs took longer than all of the network's sparse
convs together. Everything else (state dict, autograd, ``torch.compile``,
other devices, ``padding_mode`` other than zeros, string padding) is
``nn.Conv2d``'s own forward, followed by the activation.
``use_depthwise_kernel(model)`` swaps a model's depthwise convs in place.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _ext
from ..activation import FusedActivation, bounds_of
from ..ops.backends import cast, native_dtype
from ..ops.sparse_conv import _plain_inference, channels_last_like
from .replace import replace_module


def _one_filter_per_channel(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups > 1
            and conv.groups == conv.in_channels == conv.out_channels)


class DepthwiseConv2d(FusedActivation, nn.Conv2d):
    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "DepthwiseConv2d":
        """The same conv, sharing ``conv``'s weight and bias."""
        if not _one_filter_per_channel(conv):
            raise ValueError(f"conv: expected a depthwise nn.Conv2d (groups == in_channels == "
                             f"out_channels > 1), got {conv}")
        new = cls(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                  conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                  conv.padding_mode, device="meta")
        new.weight, new.bias = conv.weight, conv.bias
        new.train(conv.training)
        return new

    def to_dense(self) -> nn.Conv2d:
        """A plain ``nn.Conv2d`` sharing this weight and bias (without the activation)."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, self.stride,
                         self.padding, self.dilation, self.groups, self.bias is not None,
                         self.padding_mode, device="meta")
        conv.weight, conv.bias = self.weight, self.bias
        return conv

    def _runs_kernel(self, x: Tensor) -> bool:
        return (_ext.C is not None and isinstance(x, Tensor) and x.dim() == 4
                and x.device.type == "cpu" and x.shape[1] == self.in_channels
                and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and x.dtype == self.weight.dtype and self.weight.device.type == "cpu"
                and _plain_inference(x, self.weight, self.bias))

    def forward(self, input: Tensor) -> Tensor:
        if not self._runs_kernel(input):
            return self._activated(super().forward(input))
        work = native_dtype(input)
        out = _ext.C.depthwise_forward(
            cast(input, work), cast(self.weight, work), cast(self.bias, work), list(self.stride),
            list(self.padding), list(self.dilation), *bounds_of(self.activation))
        out = cast(out, input.dtype)
        return out.contiguous(memory_format=torch.channels_last) if channels_last_like(input) \
            else out

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


def use_depthwise_kernel(model: nn.Module) -> nn.Module:
    """Swap every depthwise ``nn.Conv2d`` of ``model`` (groups == in_channels
    == out_channels) for a ``DepthwiseConv2d`` sharing its parameters, in
    place; returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    for name, m in list(model.named_modules()):
        if type(m) is nn.Conv2d and _one_filter_per_channel(m):
            replace_module(model, name, DepthwiseConv2d.from_conv(m))
    return model
