"""VGG-16 with batch norm for CIFAR, as used by the CIFAR pruning literature
(Liu et al. 2017 "Network Slimming"; Liu et al. 2019 "Rethinking the Value of
Network Pruning"): 13 conv+BN+ReLU layers, four max-pools, then the 2x2 map of a
32x32 input is averaged to 512 features for a single linear classifier.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


class CifarVGG(nn.Module):
    """VGG with BN built from ``cfg``: ints are 3x3 conv widths, "M" a 2x2 max-pool."""

    def __init__(self, cfg=VGG16_CFG, num_classes: int = 10):
        super().__init__()
        if not cfg or not all(c == "M" or (isinstance(c, int) and c > 0) for c in cfg):
            raise ValueError(f"cfg: expected positive conv widths and 'M' pools, got {cfg!r}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        layers, in_channels = [], 3
        for c in cfg:
            if c == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            # No conv bias: the BN shift that follows makes it redundant.
            conv = nn.Conv2d(in_channels, c, 3, padding=1, bias=False)
            layers += [conv, nn.BatchNorm2d(c), nn.ReLU()]
            in_channels = c
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg16_bn(num_classes: int = 10) -> CifarVGG:
    return CifarVGG(VGG16_CFG, num_classes)
