"""Building blocks shared by MobileNet V1, V2 and V3.

They mirror torchvision's ``Conv2dNormActivation`` and ``SqueezeExcitation``
(same child order and names), which keeps the state_dict keys of the V2/V3
models equal to torchvision's.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn


def make_divisible(value: float, divisor: int = 8, min_value: Optional[int] = None) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, never more than 10% down.

    The MobileNet papers scale channel counts this way (TF reference code) so
    every width stays hardware friendly under any ``width_mult``.
    """
    if not value > 0:
        raise ValueError(f"value: expected a positive channel count, got {value!r}")
    if not isinstance(divisor, int) or divisor < 1:
        raise ValueError(f"divisor: expected a positive int, got {divisor!r}")
    min_value = divisor if min_value is None else min_value
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def check_width_mult(width_mult: float) -> None:
    is_number = isinstance(width_mult, (int, float)) and not isinstance(width_mult, bool)
    if not is_number or not width_mult > 0:
        raise ValueError(f"width_mult: expected a positive number, got {width_mult!r}")


def check_dropout(dropout: float) -> None:
    is_number = isinstance(dropout, (int, float)) and not isinstance(dropout, bool)
    if not is_number or not 0 <= dropout < 1:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")


class ConvBNAct(nn.Sequential):
    """Conv2d (no bias, "same" padding) -> BatchNorm2d -> optional activation.

    Children are named 0, 1, 2 like torchvision's ``Conv2dNormActivation``.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        groups: int = 1,
        norm_layer: Callable[[int], nn.Module] = nn.BatchNorm2d,
        activation: Optional[Callable[[], nn.Module]] = nn.ReLU,
    ):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2,
                      groups=groups, bias=False),
            norm_layer(out_channels),
        ]
        if activation is not None:
            layers.append(activation())
        super().__init__(*layers)
        self.out_channels = out_channels


class SqueezeExcitation(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale each channel by a gate
    computed from the globally pooled features. V3 gates with a hard sigmoid."""

    def __init__(self, channels: int, squeeze_channels: int, scale_activation=nn.Hardsigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = nn.ReLU()
        self.scale_activation = scale_activation()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


def init_mobilenet_weights(model: nn.Module) -> None:
    """torchvision's MobileNet init: Kaiming fan-out convs, N(0, 0.01) linears."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
