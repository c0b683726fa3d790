"""MobileNet V1 (Howard et al. 2017): a 3x3 stem, then 13 depthwise-separable
blocks (3x3 depthwise + 1x1 pointwise, each with BN and ReLU), global average
pool and one linear layer. torchvision has no V1; the layout follows the paper's
Table 1 and the init follows the V2/V3 models here.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .mobilenet import ConvBNAct, check_width_mult, init_mobilenet_weights, make_divisible

# (out_channels, stride) of each depthwise-separable block, from the paper's Table 1.
V1_BLOCKS = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))


class DepthwiseSeparable(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, 3, stride, groups=in_channels)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise(self.depthwise(x))


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        check_width_mult(width_mult)
        in_channels = make_divisible(32 * width_mult)
        layers = [ConvBNAct(3, in_channels, 3, 2)]
        for out_channels, stride in V1_BLOCKS:
            out_channels = make_divisible(out_channels * width_mult)
            layers.append(DepthwiseSeparable(in_channels, out_channels, stride))
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v1(num_classes: int = 1000, width_mult: float = 1.0) -> MobileNetV1:
    return MobileNetV1(num_classes, width_mult)
