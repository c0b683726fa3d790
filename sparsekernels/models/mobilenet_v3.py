"""MobileNet V3 small and large (Howard et al. 2019) with torchvision's
architecture, module names and state_dict keys (features.N.block.M...,
classifier.0/.3), so torchvision checkpoints load unchanged.
"""
from __future__ import annotations

from functools import partial
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .mobilenet import (ConvBNAct, SqueezeExcitation, check_dropout, check_width_mult,
                        init_mobilenet_weights, make_divisible)

# The TF reference's BN hyper-parameters (PyTorch momentum = 1 - TF decay).
V3BatchNorm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class Bneck(NamedTuple):
    """One bottleneck row of the paper's Tables 1-2, widths before width_mult."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    use_se: bool
    use_hardswish: bool
    stride: int


V3_LARGE = (
    Bneck(16, 3, 16, 16, False, False, 1), Bneck(16, 3, 64, 24, False, False, 2),
    Bneck(24, 3, 72, 24, False, False, 1), Bneck(24, 5, 72, 40, True, False, 2),
    Bneck(40, 5, 120, 40, True, False, 1), Bneck(40, 5, 120, 40, True, False, 1),
    Bneck(40, 3, 240, 80, False, True, 2), Bneck(80, 3, 200, 80, False, True, 1),
    Bneck(80, 3, 184, 80, False, True, 1), Bneck(80, 3, 184, 80, False, True, 1),
    Bneck(80, 3, 480, 112, True, True, 1), Bneck(112, 3, 672, 112, True, True, 1),
    Bneck(112, 5, 672, 160, True, True, 2), Bneck(160, 5, 960, 160, True, True, 1),
    Bneck(160, 5, 960, 160, True, True, 1),
)
V3_SMALL = (
    Bneck(16, 3, 16, 16, True, False, 2), Bneck(16, 3, 72, 24, False, False, 2),
    Bneck(24, 3, 88, 24, False, False, 1), Bneck(24, 5, 96, 40, True, True, 2),
    Bneck(40, 5, 240, 40, True, True, 1), Bneck(40, 5, 240, 40, True, True, 1),
    Bneck(40, 5, 120, 48, True, True, 1), Bneck(48, 5, 144, 48, True, True, 1),
    Bneck(48, 5, 288, 96, True, True, 2), Bneck(96, 5, 576, 96, True, True, 1),
    Bneck(96, 5, 576, 96, True, True, 1),
)


class InvertedResidualSE(nn.Module):
    """V3 bottleneck: optional 1x1 expand, depthwise conv, optional SE, 1x1 project."""

    def __init__(self, cfg: Bneck, width_mult: float):
        super().__init__()
        in_channels = make_divisible(cfg.in_channels * width_mult)
        expanded = make_divisible(cfg.expanded * width_mult)
        out_channels = make_divisible(cfg.out_channels * width_mult)
        act = nn.Hardswish if cfg.use_hardswish else nn.ReLU
        self.use_res_connect = cfg.stride == 1 and in_channels == out_channels
        layers = []
        if expanded != in_channels:
            layers.append(ConvBNAct(in_channels, expanded, 1,
                                    norm_layer=V3BatchNorm, activation=act))
        layers.append(ConvBNAct(expanded, expanded, cfg.kernel, cfg.stride, groups=expanded,
                                norm_layer=V3BatchNorm, activation=act))
        if cfg.use_se:
            layers.append(SqueezeExcitation(expanded, make_divisible(expanded // 4)))
        layers.append(ConvBNAct(expanded, out_channels, 1, norm_layer=V3BatchNorm, activation=None))
        self.block = nn.Sequential(*layers)
        self.out_channels = out_channels

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:  # fixed at construction, so symbolic tracing sees a constant
            return x + self.block(x)
        return self.block(x)


class MobileNetV3(nn.Module):
    def __init__(self, setting, last_channels: int, num_classes: int = 1000,
                 width_mult: float = 1.0, dropout: float = 0.2):
        super().__init__()
        if not setting or not all(isinstance(cfg, Bneck) for cfg in setting):
            raise ValueError("setting: expected a non-empty sequence of Bneck rows")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        check_width_mult(width_mult)
        check_dropout(dropout)
        stem_channels = make_divisible(setting[0].in_channels * width_mult)
        layers = [ConvBNAct(3, stem_channels, 3, 2,
                            norm_layer=V3BatchNorm, activation=nn.Hardswish)]
        layers += [InvertedResidualSE(cfg, width_mult) for cfg in setting]
        last_in = layers[-1].out_channels
        layers.append(ConvBNAct(last_in, 6 * last_in, 1,
                                norm_layer=V3BatchNorm, activation=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channels = make_divisible(last_channels * width_mult)
        self.classifier = nn.Sequential(
            nn.Linear(6 * last_in, last_channels),
            nn.Hardswish(),
            nn.Dropout(dropout),
            nn.Linear(last_channels, num_classes),
        )
        init_mobilenet_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_large(num_classes: int = 1000, width_mult: float = 1.0,
                       dropout: float = 0.2) -> MobileNetV3:
    return MobileNetV3(V3_LARGE, 1280, num_classes, width_mult, dropout)


def mobilenet_v3_small(num_classes: int = 1000, width_mult: float = 1.0,
                       dropout: float = 0.2) -> MobileNetV3:
    return MobileNetV3(V3_SMALL, 1024, num_classes, width_mult, dropout)
