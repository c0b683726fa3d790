"""Conv layer shapes to benchmark, grouped into named suites.

Each suite lists the distinct conv shapes of one network, with ``count`` = how
often the shape occurs there, so per-layer times can be weighted into a
whole-network estimate. Depthwise convs are left out (no 1xN block to share).

- ``resnet50``: torchvision's ResNet-50 at 224x224, stride on the 3x3 conv of
  each first bottleneck ("v1.5"); every distinct conv, 3x3, 1x1 and strided.
  ``resnet50-3x3`` is its four stride-1 3x3 shapes.
- ``resnet56``: the CIFAR ResNet-56 of He et al. (2016, sec. 4.2) at 32x32:
  three stages of nine basic blocks at 16/32/64 channels, parameter-free
  (option A) shortcuts, so every conv is 3x3.
- ``vgg16``: VGG-16's 13 convs at 224x224; ``vgg16-cifar`` the same convs at
  32x32 (the CIFAR VGG-16 of the model zoo).
- ``mobilenet_v2-1x1``: MobileNet-V2's pointwise (expand, project, final)
  convs at 224x224, width 1.0.
- ``quick``: three tiny shapes that run in seconds even under the Triton
  interpreter.

A shape from the command line (``--shape cin,cout,k,stride,hw``) is a suite
of its own, built by :func:`parse_shape`.
"""
from __future__ import annotations

import fnmatch
from typing import NamedTuple


class Layer(NamedTuple):
    name: str
    cin: int
    cout: int
    k: int  # square kernel
    stride: int
    hw: int  # input height = width
    count: int = 1

    @property
    def padding(self) -> int:
        return self.k // 2  # "same" for stride 1, as in every suite here

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.k) // self.stride + 1


def _layer(cin: int, cout: int, k: int, stride: int, hw: int, count: int = 1) -> Layer:
    s = f"s{stride}" if stride != 1 else ""
    return Layer(f"{k}x{k}{s}_{cin}-{cout}@{hw}", cin, cout, k, stride, hw, count)


_RESNET50_3X3 = [
    _layer(64, 64, 3, 1, 56, 3),
    _layer(128, 128, 3, 1, 28, 3),
    _layer(256, 256, 3, 1, 14, 5),
    _layer(512, 512, 3, 1, 7, 2),
]
_RESNET50_STRIDED = [
    _layer(3, 64, 7, 2, 224, 1),  # stem
    _layer(128, 128, 3, 2, 56, 1),
    _layer(256, 256, 3, 2, 28, 1),
    _layer(512, 512, 3, 2, 14, 1),
]
_RESNET50_1X1 = [
    _layer(64, 64, 1, 1, 56, 1),
    _layer(64, 256, 1, 1, 56, 4),  # 3 expansions + the layer1 downsample
    _layer(256, 64, 1, 1, 56, 2),
    _layer(256, 128, 1, 1, 56, 1),
    _layer(128, 512, 1, 1, 28, 4),
    _layer(256, 512, 1, 2, 56, 1),  # downsample
    _layer(512, 128, 1, 1, 28, 3),
    _layer(512, 256, 1, 1, 28, 1),
    _layer(256, 1024, 1, 1, 14, 6),
    _layer(512, 1024, 1, 2, 28, 1),  # downsample
    _layer(1024, 256, 1, 1, 14, 5),
    _layer(1024, 512, 1, 1, 14, 1),
    _layer(512, 2048, 1, 1, 7, 3),
    _layer(1024, 2048, 1, 2, 14, 1),  # downsample
    _layer(2048, 512, 1, 1, 7, 2),
]
_RESNET56 = [
    _layer(3, 16, 3, 1, 32, 1),  # stem
    _layer(16, 16, 3, 1, 32, 18),  # stage 1: 9 blocks x 2 convs
    _layer(16, 32, 3, 2, 32, 1),  # first conv of stage 2
    _layer(32, 32, 3, 1, 16, 17),
    _layer(32, 64, 3, 2, 16, 1),  # first conv of stage 3
    _layer(64, 64, 3, 1, 8, 17),
]


def _vgg16(hw: int) -> list[Layer]:
    """VGG-16's convs (all 3x3, stride 1; a 2x2 max-pool ends each stage)."""
    stages = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
    layers = []
    for stage, (cin, cout, convs) in enumerate(stages):
        at = hw >> stage
        if cin == cout:
            layers.append(_layer(cin, cout, 3, 1, at, convs))
        else:
            layers += [_layer(cin, cout, 3, 1, at), _layer(cout, cout, 3, 1, at, convs - 1)]
    return layers


_MOBILENET_V2_1X1 = [
    _layer(32, 16, 1, 1, 112, 1),  # project of the first (t=1) block
    _layer(16, 96, 1, 1, 112, 1),
    _layer(96, 24, 1, 1, 56, 1),
    _layer(24, 144, 1, 1, 56, 2),
    _layer(144, 24, 1, 1, 56, 1),
    _layer(144, 32, 1, 1, 28, 1),
    _layer(32, 192, 1, 1, 28, 3),
    _layer(192, 32, 1, 1, 28, 2),
    _layer(192, 64, 1, 1, 14, 1),
    _layer(64, 384, 1, 1, 14, 4),
    _layer(384, 64, 1, 1, 14, 3),
    _layer(384, 96, 1, 1, 14, 1),
    _layer(96, 576, 1, 1, 14, 3),
    _layer(576, 96, 1, 1, 14, 2),
    _layer(576, 160, 1, 1, 7, 1),
    _layer(160, 960, 1, 1, 7, 3),
    _layer(960, 160, 1, 1, 7, 2),
    _layer(960, 320, 1, 1, 7, 1),
    _layer(320, 1280, 1, 1, 7, 1),  # the last conv before pooling
]
_QUICK = [
    _layer(16, 32, 3, 1, 8),
    _layer(16, 32, 3, 2, 9),  # odd size and a stride
    _layer(32, 16, 1, 1, 6),
]

SUITES: dict[str, list[Layer]] = {
    "resnet50": _RESNET50_3X3 + _RESNET50_STRIDED + _RESNET50_1X1,
    "resnet50-3x3": _RESNET50_3X3,
    "resnet56": _RESNET56,
    "vgg16": _vgg16(224),
    "vgg16-cifar": _vgg16(32),
    "mobilenet_v2-1x1": _MOBILENET_V2_1X1,
    "quick": _QUICK,
}
CUSTOM = "custom"  # the suite name records get for --shape layers


def parse_shape(text: str) -> Layer:
    """``"cin,cout,k,stride,hw"`` -> a Layer; ValueError says what is wrong."""
    fields = ("cin", "cout", "k", "stride", "hw")
    parts = text.split(",")
    if len(parts) != len(fields):
        raise ValueError(f"expected {','.join(fields)} (5 ints), got {text!r}")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected 5 ints {','.join(fields)}, got {text!r}") from None
    for name, value in zip(fields, values):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value} in {text!r}")
    return _layer(*values)


def select(layers: list[Layer], patterns: list[str] | None, where: str) -> list[Layer]:
    """The layers whose name matches any glob in ``patterns`` (all if none)."""
    if not patterns:
        return layers
    kept = [x for x in layers if any(fnmatch.fnmatchcase(x.name, p) for p in patterns)]
    if not kept:
        names = ", ".join(x.name for x in layers)
        raise ValueError(f"--layers: {patterns} match no layer of {where!r} ({names})")
    return kept
