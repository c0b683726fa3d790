"""Data sets for the pruning + fine-tuning recipes.

    from sparsekernels.data import get_datasets
    train, test, info = get_datasets("digits")                  # bundled with sklearn
    train, test, info = get_datasets("cifar10", "~/data", seed=0)

Every data set except ``digits`` reads files already on disk and raises
FileNotFoundError naming what it expected and where to get it; nothing is ever
downloaded. A malformed file raises DataFileError (a ValueError) naming it,
within memory bounded by what the file holds (see ``files``). Augmentation
draws from torch's RNG (see ``transforms``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

from torch.utils.data import Dataset

from .cifar import INPUT_SHAPE as CIFAR_SHAPE
from .cifar import VARIANTS as CIFAR_VARIANTS
from .cifar import load_cifar
from .digits import INPUT_SHAPE as DIGITS_SHAPE
from .digits import NUM_CLASSES as DIGITS_CLASSES
from .digits import load_digits_split
from .files import DataFileError
from .image_folder import ImageFolder, load_image_folder
from .mnist import NUM_CLASSES as MNIST_CLASSES
from .mnist import load_mnist


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about a data set."""

    num_classes: int
    input_shape: Tuple[int, int, int]  # (C, H, W) of one input as the model sees it
    name: str


def _require_path(name: str, data_path: Optional[str]) -> str:
    if data_path is None:
        raise ValueError(
            f"data_path: {name} reads files from disk; pass the folder that holds them"
        )
    return os.path.expanduser(os.fspath(data_path))


# Each loader takes (name, data_path, seed, augment, image_size) and returns
# (train, test, info); get_datasets has already checked the arguments.
def _digits(name, data_path, seed, augment, image_size):
    train, test = load_digits_split(seed)  # sklearn bundles it: data_path is not used
    return train, test, DataInfo(DIGITS_CLASSES, DIGITS_SHAPE, name)


def _cifar(name, data_path, seed, augment, image_size):
    train, test = load_cifar(name, _require_path(name, data_path), augment)
    return train, test, DataInfo(CIFAR_VARIANTS[name].num_classes, CIFAR_SHAPE, name)


def _mnist(name, data_path, seed, augment, image_size):
    train, test = load_mnist(_require_path(name, data_path))
    return train, test, DataInfo(MNIST_CLASSES, tuple(train.images.shape[1:]), name)


def _image_folder(name, data_path, seed, augment, image_size):
    image_size = 224 if image_size is None else image_size
    train, test = load_image_folder(_require_path(name, data_path), augment, image_size)
    return train, test, DataInfo(len(train.classes), (3, image_size, image_size), name)


DATASETS: Dict[str, Callable[..., Tuple[Dataset, Dataset, DataInfo]]] = {
    "digits": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "mnist": _mnist,
    "imagenet": _image_folder,
    "imagefolder": _image_folder,
}
_RESIZABLE = ("imagenet", "imagefolder")


def get_datasets(
    name: str = "digits",
    data_path: Optional[str] = None,
    *,
    seed: int = 0,
    augment: bool = True,
    image_size: Optional[int] = None,
) -> Tuple[Dataset, Dataset, DataInfo]:
    """(train, test, info) for data set ``name``.

    - ``data_path``: the folder holding the files (ignored by ``digits``).
    - ``seed``: the train/test split of ``digits``, the only data set without
      an official split; augmentation randomness comes from torch's RNG instead.
    - ``augment``: train-time augmentation (CIFAR crop+flip, ImageNet
      random-resized-crop+flip; digits and MNIST have none).
    - ``image_size``: square input side for ``imagenet``/``imagefolder``
      (default 224); the other data sets have a fixed size.
    """
    if name not in DATASETS:
        raise ValueError(f"name: unknown data set {name!r}; known: {', '.join(DATASETS)}")
    if data_path is not None and not isinstance(data_path, (str, os.PathLike)):
        raise ValueError(f"data_path: expected a folder path or None, got {data_path!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    if not isinstance(augment, bool):
        raise ValueError(f"augment: expected a bool, got {augment!r}")
    if image_size is not None and name not in _RESIZABLE:
        resizable = " and ".join(_RESIZABLE)
        raise ValueError(f"image_size: only {resizable} can be resized, not {name!r}")
    return DATASETS[name](name, data_path, seed, augment, image_size)


__all__ = ["DATASETS", "DataFileError", "DataInfo", "ImageFolder", "get_datasets"]
