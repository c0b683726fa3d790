"""MNIST from the original idx files (http://yann.lecun.com/exdb/mnist/, mirrored
at https://ossci-datasets.s3.amazonaws.com/mnist/), plain or gzipped; never
downloaded here. Fashion-MNIST ships in the same format and loads too.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from typing import Optional, Tuple

import numpy as np
import torch

from .files import DataFileError, open_regular_file, read_at_most
from .transforms import Compose, Normalize, TensorImageDataset, ToTensor

URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
NUM_CLASSES = 10
MEAN, STD = (0.1307,), (0.3081,)
FILES = {  # split -> (images, labels), without the optional .gz
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UBYTE = 0x08  # idx type code of unsigned bytes, the only one MNIST uses
# 2 GiB: well above the largest idx file of the MNIST family (EMNIST's 0.6 GB),
# well below what a header can claim (2**32 per size).
MAX_IDX_BYTES = 1 << 31


def read_idx(path: str, ndim: int) -> np.ndarray:
    """Parse an unsigned-byte idx file: magic 0x0000 08 <ndim>, then ``ndim``
    big-endian uint32 sizes, then exactly their product of bytes. A ``.gz`` is
    decompressed as a stream: the header is checked before any data is read,
    and only as much data is held as the file really yields."""
    if not isinstance(ndim, int) or ndim < 1:
        raise ValueError(f"ndim: expected a positive int, got {ndim!r}")
    with open_regular_file(path) as raw_file:
        gz = path.endswith(".gz")
        stream = gzip.GzipFile(fileobj=raw_file, mode="rb") if gz else raw_file
        try:
            dims = _read_idx_header(stream, path, ndim)
            size = math.prod(dims)
            if not gz:  # the file size tells whether the data fits before reading it
                _check_payload(path, dims, os.fstat(raw_file.fileno()).st_size - stream.tell())
            data = read_at_most(stream, size + 1)  # one byte more exposes trailing data
        except (OSError, EOFError, zlib.error) as exc:  # mostly corrupt or truncated gzip data
            raise DataFileError(path, f"unreadable data ({exc})") from None
    _check_payload(path, dims, len(data))
    return np.frombuffer(data, np.uint8).reshape(dims)


def _read_idx_header(stream, path: str, ndim: int) -> Tuple[int, ...]:
    expected_magic = (_UBYTE << 8) | ndim
    head = read_at_most(stream, 4)
    magic = int.from_bytes(head, "big") if len(head) == 4 else None
    if magic != expected_magic:
        found = "a file shorter than 4 bytes" if magic is None else f"0x{magic:08x}"
        raise DataFileError(path, f"bad idx magic number {found}, expected "
                                  f"0x{expected_magic:08x} (unsigned-byte data with {ndim} "
                                  f"dimension{'s' * (ndim > 1)})")
    sizes = read_at_most(stream, 4 * ndim)
    if len(sizes) != 4 * ndim:
        raise DataFileError(path, f"truncated idx header ({4 + len(sizes)} bytes)")
    dims = tuple(int.from_bytes(sizes[i:i + 4], "big") for i in range(0, 4 * ndim, 4))
    size = math.prod(dims)  # exact: Python ints do not overflow
    if not 0 < size <= MAX_IDX_BYTES:
        raise DataFileError(path, f"header gives shape {dims} ({size} bytes), expected "
                                  f"sizes of at least 1 and at most {MAX_IDX_BYTES} bytes in all")
    return dims


def _check_payload(path: str, dims: Tuple[int, ...], found: int) -> None:
    size = math.prod(dims)
    if found != size:
        what = f"only {found} bytes of data follow" if found < size else "more data follows"
        raise DataFileError(path, f"header gives shape {dims} ({size} bytes) but {what}")


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
        raise DataFileError(image_file, f"{len(images)} images but {label_file} "
                                        f"holds {len(labels)} labels")
    if labels.max() >= NUM_CLASSES:
        raise DataFileError(label_file, f"label {labels.max()} outside [0, {NUM_CLASSES})")
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
