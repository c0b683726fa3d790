"""MNIST from the original idx files (http://yann.lecun.com/exdb/mnist/, mirrored
at https://ossci-datasets.s3.amazonaws.com/mnist/), plain or gzipped; never
downloaded here. Fashion-MNIST ships in the same format and loads too.
"""
from __future__ import annotations

import gzip
import os
from typing import Optional, Tuple

import numpy as np
import torch

from .transforms import Compose, Normalize, TensorImageDataset, ToTensor

URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
NUM_CLASSES = 10
MEAN, STD = (0.1307,), (0.3081,)
FILES = {  # split -> (images, labels), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08  # idx type code of unsigned bytes, the only one MNIST uses


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file: magic 0x0000 08 <ndim>, then ``ndim``
    big-endian uint32 sizes, then the data. Checks the header against the file."""
    if not isinstance(ndim, int) or ndim < 1:
        raise ValueError(f"ndim: expected a positive int, got {ndim!r}")
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    expected_magic = (_UBYTE << 8) | ndim
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if magic != expected_magic:
        found = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise ValueError(f"{path}: bad idx magic number {found}, expected 0x{expected_magic:08x} "
                         f"(unsigned-byte data with {ndim} dimension{'s' * (ndim > 1)})")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated idx header ({len(raw)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    data = np.frombuffer(raw, np.uint8, offset=header)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header gives shape {dims} ({int(np.prod(dims))} bytes) "
                         f"but {data.size} bytes of data follow")
    return data.reshape(dims)


def _find(folder: str, name: str) -> Optional[str]:
    for candidate in (name, name + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def find_mnist_folder(data_path: str) -> str:
    """``data_path`` or its torchvision-style ``MNIST/raw`` subfolder, whichever
    holds all four idx files."""
    names = [name for pair in FILES.values() for name in pair]
    for folder in (data_path, os.path.join(data_path, "MNIST", "raw")):
        if all(_find(folder, name) for name in names):
            return folder
    raise FileNotFoundError(
        f"mnist: expected {', '.join(names)} (each plain or .gz) in {data_path!r} "
        f"or {os.path.join(data_path, 'MNIST', 'raw')!r}; get them from {URL}"
    )


def _load_split(folder: str, split: str) -> Tuple[torch.Tensor, torch.Tensor]:
    image_file, label_file = (_find(folder, name) for name in FILES[split])
    images, labels = read_idx(image_file, 3), read_idx(label_file, 1)
    if len(images) != len(labels):
        raise ValueError(
            f"{image_file} holds {len(images)} images but {label_file} {len(labels)} labels"
        )
    if labels.size and labels.max() >= NUM_CLASSES:
        raise ValueError(f"{label_file}: label {labels.max()} outside [0, {NUM_CLASSES})")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def load_mnist(data_path: str) -> Tuple[TensorImageDataset, TensorImageDataset]:
    """(train, test) of float [1, H, W] images normalised with MNIST's (0.1307, 0.3081).
    No augmentation: the LeNet recipes train without it."""
    if not isinstance(data_path, (str, os.PathLike)):
        raise ValueError(f"data_path: expected a folder path, got {data_path!r}")
    folder = find_mnist_folder(os.fspath(data_path))
    transform = Compose([ToTensor(), Normalize(MEAN, STD)])
    return (TensorImageDataset(*_load_split(folder, "train"), transform),
            TensorImageDataset(*_load_split(folder, "test"), transform))
