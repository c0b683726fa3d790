"""The MNIST LeNets of the pruning literature (Han et al. 2015; Frankle & Carbin
2019 "Lottery Ticket"; Ding et al. 2019 "Global Sparse Momentum").

Weights use Kaiming-normal init (open_lth's default for these LeNets) rather than
Caffe's xavier fillers; biases start at zero.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def _init_kaiming(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
            nn.init.zeros_(m.bias)


class LeNet300100(nn.Module):
    """784-300-100-10 fully connected net on flattened 28x28 images (266,610 params)."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.relu = nn.ReLU()
        _init_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.fc1(torch.flatten(x, 1)))
        return self.fc3(self.relu(self.fc2(x)))


class LeNet5(nn.Module):
    """Caffe's MNIST LeNet-5 (431,080 params): conv 20@5x5, pool, conv 50@5x5,
    pool, fc 500, ReLU, fc. Like the Caffe model the papers prune, the convs
    have no activation of their own; the max-pools are the only non-linearity."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
        self.conv1 = nn.Conv2d(1, 20, 5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)
        _init_kaiming(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool2(self.conv2(self.pool1(self.conv1(x))))
        return self.fc2(self.relu(self.fc1(torch.flatten(x, 1))))


def lenet_300_100(num_classes: int = 10) -> LeNet300100:
    return LeNet300100(num_classes)


def lenet5(num_classes: int = 10) -> LeNet5:
    return LeNet5(num_classes)
