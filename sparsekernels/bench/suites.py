"""Conv layer shapes to benchmark, grouped into named suites.

``resnet50`` holds every distinct conv shape of torchvision's ResNet-50 at a
224x224 input (stride on the 3x3 conv of each first bottleneck, "v1.5"), with
``count`` = how often the shape occurs in the network, so per-layer times can
be weighted into a whole-network estimate.
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
        return self.k // 2  # ResNet convention: "same" for stride 1

    @property
    def out_hw(self) -> int:
        return (self.hw + 2 * self.padding - self.k) // self.stride + 1


def _layer(cin: int, cout: int, k: int, stride: int, hw: int, count: int) -> Layer:
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
# Seconds even under the Triton interpreter: odd sizes, a stride, a 1x1.
_QUICK = [
    _layer(16, 32, 3, 1, 8, 1),
    _layer(16, 32, 3, 2, 9, 1),
    _layer(32, 16, 1, 1, 6, 1),
]

SUITES: dict[str, list[Layer]] = {
    "resnet50": _RESNET50_3X3 + _RESNET50_STRIDED + _RESNET50_1X1,
    "resnet50-3x3": _RESNET50_3X3,
    "quick": _QUICK,
}


def select(suite: str, patterns: list[str] | None = None) -> list[Layer]:
    """The suite's layers whose name matches any glob in ``patterns`` (all if none)."""
    layers = SUITES[suite]
    if patterns:
        layers = [x for x in layers if any(fnmatch.fnmatchcase(x.name, p) for p in patterns)]
        if not layers:
            names = ", ".join(x.name for x in SUITES[suite])
            raise ValueError(f"--layers: {patterns} match no layer of {suite!r} ({names})")
    return layers
