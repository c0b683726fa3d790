"""CIFAR-10 / CIFAR-100 from the official "python version" pickle batches
(https://www.cs.toronto.edu/~kriz/cifar.html), never downloaded here.

The batches are pickles, so they are read by ``cifar_pickle``, which interprets
only what they contain (a dict of numpy arrays, lists, bytes) and builds no
numpy object from the file: a tampered file fails with a DataFileError naming it
instead of running code or allocating more than the file holds.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, List, Tuple

import numpy as np
import torch

from .cifar_pickle import ArrayRecord, MalformedPickle, describe, load_batch_pickle
from .files import DataFileError, read_regular_file
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

IMAGE_BYTES = 3 * 32 * 32
# The largest official batch (CIFAR-100 train) holds 50000 images. A file may
# hold twice their bytes (protocol 2 writes bytes as latin-1 text, UTF-8 encoded)
# plus labels and file names; a batch needs about 12 opcodes per image.
MAX_BATCH_IMAGES = 50_000
MAX_BATCH_BYTES = 2 * MAX_BATCH_IMAGES * IMAGE_BYTES + (64 << 20)
MAX_BATCH_OPCODES = 16 * MAX_BATCH_IMAGES + 10_000


def _read_batch(path: str, label_key: bytes, num_classes: int) -> Tuple[np.ndarray, List[int]]:
    """(uint8 data [N, 3072], N labels in [0, num_classes)) of one batch file;
    DataFileError naming the file and the field for anything else."""
    try:
        batch = load_batch_pickle(read_regular_file(path, MAX_BATCH_BYTES), MAX_BATCH_OPCODES)
    except MalformedPickle as exc:
        raise DataFileError(path, f"not a CIFAR batch: {exc}") from None
    expected = f"a dict with b'data' and {label_key!r}"
    if not isinstance(batch, dict):
        raise DataFileError(path, f"not a CIFAR batch: a {type(batch).__name__}, "
                                  f"expected {expected}")
    missing = [key for key in (b"data", label_key) if key not in batch]
    if missing:
        raise DataFileError(path, f"not a CIFAR batch: no {missing[0]!r}, expected {expected}")
    data = _images(batch[b"data"], path)
    labels = _labels(batch[label_key], path, label_key, num_classes)
    if len(data) != len(labels):
        raise DataFileError(path, f"{len(data)} images in b'data' but "
                                  f"{len(labels)} labels in {label_key!r}")
    return data, labels


def _images(record, path: str) -> np.ndarray:
    if not isinstance(record, ArrayRecord):
        raise DataFileError(path, f"b'data' is a {type(record).__name__}, "
                                  "expected a numpy uint8 array")
    try:
        data = record.uint8_array()
    except MalformedPickle as exc:
        raise DataFileError(path, f"b'data': {exc}") from None
    if data.ndim != 2 or data.shape[1] != IMAGE_BYTES or not 0 < len(data) <= MAX_BATCH_IMAGES:
        raise DataFileError(path, f"b'data' has shape {data.shape}, expected [N, {IMAGE_BYTES}] "
                                  f"with 0 < N <= {MAX_BATCH_IMAGES}")
    return data


def _labels(labels, path: str, label_key: bytes, num_classes: int) -> List[int]:
    if not isinstance(labels, list):
        raise DataFileError(path, f"{label_key!r} is a {type(labels).__name__}, "
                                  "expected a list of ints")
    for i, label in enumerate(labels):
        if type(label) is not int or not 0 <= label < num_classes:
            raise DataFileError(path, f"{label_key!r}[{i}] is {describe(label)}, "
                                      f"expected an int in [0, {num_classes})")
    return labels


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
    parts = [_read_batch(os.path.join(folder, f), spec.label_key, spec.num_classes)
             for f in files]
    data = np.concatenate([d for d, _ in parts])
    labels = torch.tensor([label for _, batch in parts for label in batch], dtype=torch.long)
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
