"""The dense ops a sparse network runs beside its sparse convs, on the
library's NCHW CPU kernels: ``DepthwiseConv2d`` (its activation fused) and
``MaxPool2d`` (``csrc/cpu/window``), and ``InputConv2d``, a dense conv on the
network's image (at most 4 input channels: the stem) on the 1xN kernel with
every block kept, its activation fused.

The sparse kernels run in NCHW. A pruned MobileNet keeps its depthwise convs
dense (``sparsify`` skips them: each kept entry would be one weight), and a
ResNet its stem's max pool; in NCHW oneDNN's depthwise conv is 2-3x slower
and PyTorch's max pool ~12x slower than in channels_last, and converting
around each one costs more than it saves. At 90% sparsity MobileNet-V2's
dense depthwise convs took longer than all its sparse convs together, and
ResNet-50's max pool an eighth of the network. Each module is PyTorch's own
in every other respect: state dict, autograd, ``torch.compile``, other
devices and the arguments the kernels do not take (a conv's non-zeros
``padding_mode`` or string padding, a pool's ``ceil_mode`` or indices) run
PyTorch's forward (then the activation). oneDNN's NCHW conv over 3 input
channels has little to vectorise along, and its activation is a pass of its
own over the network's largest activation; on the 1xN kernel the activation
is in the store (side by side: benchmarks/results/checks/input-conv/).
``use_nchw_kernels(model)`` swaps a model's depthwise convs, image convs and
max pools in place.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import _ext
from ..activation import FusedActivation, bounds_of
from ..ops.backends import cast, native_dtype
from ..ops.sparse_conv import _plain_inference, channels_last_like
from .block1xn import Block1xNConv2d
from .replace import replace_module

# Input channels up to which a dense conv counts as one on the image.
_IMAGE_CHANNELS = 4


def _one_filter_per_channel(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups > 1
            and conv.groups == conv.in_channels == conv.out_channels)


def _kernel_input(x, channels: int, *operands) -> bool:
    """Whether the compiled kernels take ``x`` (an eager CPU inference call
    on ``channels`` channels); PyTorch's forward, and its errors, otherwise."""
    return (_ext.C is not None and isinstance(x, Tensor) and x.dim() == 4
            and x.device.type == "cpu" and x.shape[1] == channels
            and all(t is None or (t.dtype == x.dtype and t.device == x.device) for t in operands)
            and _plain_inference(x, *operands))


def _in_input_layout(out: Tensor, x: Tensor) -> Tensor:
    return out.contiguous(memory_format=torch.channels_last) if channels_last_like(x) else out


def _on_image(conv: nn.Module) -> bool:
    return (isinstance(conv, nn.Conv2d) and conv.groups == 1
            and conv.in_channels <= _IMAGE_CHANNELS)


class NchwConv2d(FusedActivation, nn.Conv2d):
    """An ``nn.Conv2d`` (its state dict, autograd and other devices are
    PyTorch's) whose eager CPU inference runs a library kernel, its
    activation fused; ``accepts`` says which convs it takes."""

    accepts = staticmethod(lambda conv: False)
    expected = ""

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> "NchwConv2d":
        """The same conv, sharing ``conv``'s weight and bias."""
        if not cls.accepts(conv):
            raise ValueError(f"conv: expected {cls.expected}, got {conv}")
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

    def forward(self, input: Tensor) -> Tensor:
        if (self.padding_mode != "zeros" or isinstance(self.padding, str)
                or not _kernel_input(input, self.in_channels, self.weight, self.bias)):
            return self._activated(super().forward(input))
        return self._kernel_forward(input)

    def _kernel_forward(self, input: Tensor) -> Tensor:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return super().extra_repr() + self._activation_repr()


class DepthwiseConv2d(NchwConv2d):
    """A depthwise conv (groups == in_channels == out_channels > 1) on the
    window kernels."""

    accepts = staticmethod(_one_filter_per_channel)
    expected = "a depthwise nn.Conv2d (groups == in_channels == out_channels > 1)"

    def _kernel_forward(self, input: Tensor) -> Tensor:
        work = native_dtype(input)
        out = _ext.C.depthwise_forward(
            cast(input, work), cast(self.weight, work), cast(self.bias, work), list(self.stride),
            list(self.padding), list(self.dilation), *bounds_of(self.activation))
        return _in_input_layout(cast(out, input.dtype), input)


class InputConv2d(NchwConv2d):
    """A dense conv on the network's image (groups 1, at most 4 input
    channels) on the 1xN kernel with every block kept: a Block1xNConv2d
    built from the weight, rebuilt when the weight, bias, conv arguments or
    activation change."""

    accepts = staticmethod(_on_image)
    expected = (f"an nn.Conv2d on an image (groups == 1, in_channels <= "
                f"{_IMAGE_CHANNELS})")

    def _kernel_forward(self, input: Tensor) -> Tensor:
        w, b = self.weight, self.bias
        key = (w._version, None if b is None else b._version, self.stride, self.padding,
               self.dilation, self.activation)
        held = self.__dict__.get("_blocks")  # a cache, not a submodule
        if held is None or held[0] is not w or held[1] is not b or held[2] != key:
            # Blocks of the largest height up to 16 that divides Cout: no padded rows.
            blocks = Block1xNConv2d.from_dense(self.to_dense(), n=math.gcd(self.out_channels, 16),
                                               sparsity=0.0).eval()
            blocks.activation = self.activation
            held = self.__dict__["_blocks"] = (w, b, key, blocks.requires_grad_(False))
        return held[3](input)

    def __getstate__(self):
        return {k: v for k, v in super().__getstate__().items() if k != "_blocks"}

    def _apply(self, fn, *args, **kwargs):
        self.__dict__.pop("_blocks", None)  # it would hold the old tensors
        return super()._apply(fn, *args, **kwargs)


def _pair(v) -> list[int]:
    return [v, v] if isinstance(v, int) else list(v)


class MaxPool2d(nn.MaxPool2d):
    @classmethod
    def from_pool(cls, pool: nn.MaxPool2d) -> "MaxPool2d":
        return cls(pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                   pool.return_indices, pool.ceil_mode)

    def forward(self, input: Tensor) -> Tensor:
        if (self.return_indices or self.ceil_mode or not isinstance(input, Tensor)
                or not _kernel_input(input, input.shape[1] if input.dim() == 4 else -1)):
            return super().forward(input)
        work = native_dtype(input)
        out = _ext.C.max_pool_forward(cast(input, work), _pair(self.kernel_size),
                                      _pair(self.stride), _pair(self.padding),
                                      _pair(self.dilation))
        return _in_input_layout(cast(out, input.dtype), input)


def use_nchw_kernels(model: nn.Module) -> nn.Module:
    """Swap every depthwise ``nn.Conv2d`` of ``model`` (groups == in_channels
    == out_channels) for a ``DepthwiseConv2d``, every dense one on the image
    (groups 1, at most 4 input channels) for an ``InputConv2d``, each sharing
    its parameters, and every ``nn.MaxPool2d`` for a ``MaxPool2d``, in place;
    returns ``model``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    for name, m in list(model.named_modules()):
        if type(m) is nn.Conv2d:
            cls = next((c for c in (DepthwiseConv2d, InputConv2d) if c.accepts(m)), None)
            if cls is not None:
                replace_module(model, name, cls.from_conv(m))
        elif type(m) is nn.MaxPool2d:
            replace_module(model, name, MaxPool2d.from_pool(m))
    return model
