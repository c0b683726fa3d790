"""Model zoo: the CNNs the pruning + fine-tuning recipes run on.

    from sparsekernels.models import MODELS, get_model
    model = get_model("resnet20")                  # CIFAR-10, 10 classes
    model = get_model("resnet50", num_classes=100)

Every model is ``torch.fx.symbolic_trace``-able (no data-dependent control flow),
so channel dependencies can be found by tracing, and deterministic given
``torch.manual_seed``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from torch import nn

from .cifar_resnet import resnet20, resnet56, resnet110
from .digits_cnn import digits_cnn
from .lenet import lenet5, lenet_300_100
from .mobilenet_v1 import mobilenet_v1
from .mobilenet_v2 import mobilenet_v2
from .mobilenet_v3 import mobilenet_v3_large, mobilenet_v3_small
from .resnet import resnet18, resnet50
from .vgg import vgg16_bn


@dataclass(frozen=True)
class ModelSpec:
    """How to build an architecture and what it expects by default."""

    builder: Callable[..., nn.Module]  # (num_classes, **kwargs) -> model
    input_shape: Tuple[int, int, int]  # (C, H, W) of one default input
    num_classes: int
    dataset: str  # the data set it is meant for (a sparsekernels.data name)


_CIFAR = ((3, 32, 32), 10, "cifar10")
_IMAGENET = ((3, 224, 224), 1000, "imagenet")
_MNIST = ((1, 28, 28), 10, "mnist")

MODELS: Dict[str, ModelSpec] = {
    "resnet20": ModelSpec(resnet20, *_CIFAR),
    "resnet56": ModelSpec(resnet56, *_CIFAR),
    "resnet110": ModelSpec(resnet110, *_CIFAR),
    "vgg16_bn": ModelSpec(vgg16_bn, *_CIFAR),
    "mobilenet_v1": ModelSpec(mobilenet_v1, *_IMAGENET),
    "mobilenet_v2": ModelSpec(mobilenet_v2, *_IMAGENET),
    "mobilenet_v3_small": ModelSpec(mobilenet_v3_small, *_IMAGENET),
    "mobilenet_v3_large": ModelSpec(mobilenet_v3_large, *_IMAGENET),
    "resnet18": ModelSpec(resnet18, *_IMAGENET),
    "resnet50": ModelSpec(resnet50, *_IMAGENET),
    "lenet_300_100": ModelSpec(lenet_300_100, *_MNIST),
    "lenet5": ModelSpec(lenet5, *_MNIST),
    "digits_cnn": ModelSpec(digits_cnn, (1, 8, 8), 10, "digits"),
}


def get_model(arch: str, num_classes: Optional[int] = None, **kwargs) -> nn.Module:
    """Build ``arch`` with ``num_classes`` outputs (default: its data set's).

    ``kwargs`` go to the builder, e.g. ``shortcut="B"`` for the CIFAR ResNets or
    ``width_mult=0.5`` for the MobileNets.
    """
    if arch not in MODELS:
        raise ValueError(f"arch: unknown model {arch!r}; known: {', '.join(MODELS)}")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1
    ):
        raise ValueError(f"num_classes: expected a positive int or None, got {num_classes!r}")
    spec = MODELS[arch]
    return spec.builder(spec.num_classes if num_classes is None else num_classes, **kwargs)


__all__ = ["MODELS", "ModelSpec", "get_model"]
