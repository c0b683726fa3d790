"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches
(https://www.cs.toronto.edu/~kriz/cifar.html), never downloaded here.

The batches are pickles, so they are read with an unpickler that only admits
what they contain (numpy arrays, lists, bytes): a tampered file fails instead of
running code.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from .transforms import (Compose, Normalize, RandomCrop, RandomHorizontalFlip,
                         TensorImageDataset, ToTensor)

URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
INPUT_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class CifarVariant:
    """Where one CIFAR variant's files are, how its batches are keyed, its statistics."""

    folder: str  # the folder the official archive extracts to
    train_files: List[str]
    test_files: List[str]
    label_key: bytes
    num_classes: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    archive: str


VARIANTS: Dict[str, CifarVariant] = {
    "cifar10": CifarVariant(
        "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"],
        b"labels", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616),
        "cifar-10-python.tar.gz",
    ),
    "cifar100": CifarVariant(
        "cifar-100-python", ["train"], ["test"],
        b"fine_labels", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762),
        "cifar-100-python.tar.gz",
    ),
}

# Everything the official batches reference, under numpy 1.x and 2.x names.
_ALLOWED_GLOBALS = {
    ("_codecs", "encode"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
}


class _BatchUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"CIFAR batch refers to {module}.{name}, which a real batch never does"
            )
        return super().find_class(module, name)


def _read_batch(path: str, label_key: bytes) -> Tuple[np.ndarray, List[int]]:
    with open(path, "rb") as f:
        batch = _BatchUnpickler(f, encoding="bytes").load()
    if not isinstance(batch, dict) or b"data" not in batch or label_key not in batch:
        raise ValueError(
            f"{path}: not a CIFAR batch (expected a dict with b'data' and {label_key!r})"
        )
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = list(batch[label_key])
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise ValueError(f"{path}: expected data [N, 3072] and N labels, "
                         f"got {data.shape} and {len(labels)}")
    return data, labels


def find_cifar_folder(variant: str, data_path: str) -> str:
    """The folder holding ``variant``'s batches: ``data_path`` itself or its
    standard extracted subfolder."""
    spec = VARIANTS[variant]
    expected = spec.train_files + spec.test_files
    for folder in (data_path, os.path.join(data_path, spec.folder)):
        if all(os.path.isfile(os.path.join(folder, f)) for f in expected):
            return folder
    raise FileNotFoundError(
        f"{variant}: expected {', '.join(expected)} in {data_path!r} or "
        f"{os.path.join(data_path, spec.folder)!r}; "
        f"extract {spec.archive} (python version) from {URL}"
    )


def _load_split(folder: str, files: List[str], spec: CifarVariant):
    """(uint8 images [N, 3, 32, 32], int64 labels [N]) of ``files`` concatenated."""
    parts = [_read_batch(os.path.join(folder, f), spec.label_key) for f in files]
    data = np.concatenate([d for d, _ in parts])
    labels = torch.tensor([label for _, batch in parts for label in batch], dtype=torch.long)
    if labels.numel() and not 0 <= int(labels.min()) <= int(labels.max()) < spec.num_classes:
        raise ValueError(f"{folder}: labels outside [0, {spec.num_classes}) in {files}")
    # Rows are 1024 red, 1024 green, 1024 blue values, each a row-major 32x32 plane.
    return torch.from_numpy(data.reshape(-1, *INPUT_SHAPE)), labels


def load_cifar(variant: str, data_path: str,
               augment: bool = True) -> Tuple[TensorImageDataset, TensorImageDataset]:
    """(train, test) of normalised float [3, 32, 32] images; with ``augment`` the
    train images get a random 32x32 crop of the 4-pixel zero-padded image and a
    random horizontal flip (padding is black, i.e. applied before normalising)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant: expected one of {list(VARIANTS)}, got {variant!r}")
    if not isinstance(data_path, (str, os.PathLike)):
        raise ValueError(f"data_path: expected a folder path, got {data_path!r}")
    spec = VARIANTS[variant]
    folder = find_cifar_folder(variant, os.fspath(data_path))
    normalize = Normalize(spec.mean, spec.std)
    test_transform = Compose([ToTensor(), normalize])
    train_transform = test_transform
    if augment:
        augmentations = [RandomCrop(32, padding=4), RandomHorizontalFlip()]
        train_transform = Compose([ToTensor(), *augmentations, normalize])
    train = TensorImageDataset(*_load_split(folder, spec.train_files, spec), train_transform)
    test = TensorImageDataset(*_load_split(folder, spec.test_files, spec), test_transform)
    return train, test
