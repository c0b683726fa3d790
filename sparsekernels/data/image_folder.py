"""ImageNet-style folder trees: ``root/train/<class>/<image>`` and
``root/val/<class>/<image>``, read lazily with PIL. Classes are the sorted
train subfolder names, so label i means the same class in both splits.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Callable, Iterator, List, Sequence, Set, Tuple

from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from .files import DataFileError, open_regular_file
from .transforms import (CenterCrop, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                         Resize, ToTensor)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
# What PIL raises for a corrupt or hostile file (some plugins raise SyntaxError).
_UNREADABLE_IMAGE = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
logger = logging.getLogger(__name__)
HOW_TO_GET = ("for ImageNet, download ILSVRC2012 from https://image-net.org and sort the "
              "validation images into one folder per class (e.g. with valprep.sh)")


def _class_folders(split_dir: str) -> List[str]:
    return [entry.name for entry, kind in _list_folder(split_dir) if kind == "folder"]


@contextmanager
def _reading_folder(folder: str) -> Iterator[None]:
    try:
        yield
    except OSError as exc:
        raise DataFileError(folder, f"cannot read this folder ({exc.strerror})") from None


def _list_folder(folder: str) -> List[Tuple[os.DirEntry, str]]:
    """(entry, "folder" | "file" | "other") for the entries of ``folder`` in
    name order; "other" is a FIFO, socket, device, or a link that loops or
    leads nowhere. Found by stat alone: nothing is opened."""
    with _reading_folder(folder), os.scandir(folder) as entries:
        return [(entry, _entry_kind(entry)) for entry in sorted(entries, key=lambda e: e.name)]


def _entry_kind(entry: os.DirEntry) -> str:
    try:
        if entry.is_dir():
            entry.stat()  # cached now, so the walk can take the folder's id without failing
            return "folder"
        return "file" if entry.is_file() else "other"
    except OSError:  # e.g. ELOOP from a link to itself
        return "other"


def _folder_id(path: str) -> Tuple[int, int]:
    with _reading_folder(path):
        info = os.stat(path)
    return info.st_dev, info.st_ino


def _image_files(class_dir: str,
                 split_folders: Set[Tuple[int, int]]) -> Tuple[List[str], List[str]]:
    """(image files, image-named entries that are not regular files) under
    ``class_dir``, depth first in name order. Symlinked folders are followed,
    but each real folder is entered once, and never one of ``split_folders``
    (the split folder and its class folders): a link loop adds nothing, and a
    link to another class cannot relabel its images."""
    images, not_files, entered = [], [], set(split_folders)
    pending = [class_dir]
    while pending:
        subfolders = []
        for entry, kind in _list_folder(pending.pop()):
            if kind == "folder":
                folder_id = (entry.stat().st_dev, entry.stat().st_ino)
                if folder_id not in entered:  # in name order: the first link to it is kept
                    entered.add(folder_id)
                    subfolders.append(entry.path)
            elif entry.name.lower().endswith(IMAGE_EXTENSIONS):
                (images if kind == "file" else not_files).append(entry.path)
        pending += reversed(subfolders)  # popped in name order
    return images, not_files


class ImageFolder(Dataset):
    """(image, label) pairs from ``split_dir/<class>/...``; ``classes`` fixes the labels."""

    def __init__(self, split_dir: str, classes: Sequence[str],
                 transform: Callable[[Image.Image], Tensor]):
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(
                f"expected a folder of class subfolders at {split_dir!r}; {HOW_TO_GET}"
            )
        if not classes:
            raise ValueError("classes: expected at least one class name")
        if not callable(transform):
            raise ValueError(f"transform: expected a callable, got {transform!r}")
        label_of = {name: i for i, name in enumerate(classes)}
        present = _class_folders(split_dir)
        unknown = [name for name in present if name not in label_of]
        if unknown:
            raise ValueError(
                f"{split_dir}: class folders {unknown[:5]} are not among the train classes"
            )
        class_dirs = [os.path.join(split_dir, name) for name in present]
        split_folders = {_folder_id(path) for path in [split_dir, *class_dirs]}
        if len(split_folders) < len(class_dirs) + 1:
            raise DataFileError(split_dir, "two class folders are links to one folder "
                                           "(or to the split folder itself)")
        self.classes = list(classes)
        self.samples, not_files = [], []
        for name, class_dir in zip(present, class_dirs):
            images, skipped = _image_files(class_dir, split_folders)
            self.samples += [(path, label_of[name]) for path in images]
            not_files += skipped
        if not_files:
            logger.warning("%s: skipped %d image-named entries that are not regular files "
                           "(FIFOs, sockets, devices, broken or looping links), e.g. %s",
                           split_dir, len(not_files), not_files[:3])
        if not self.samples:
            extensions = "/".join(IMAGE_EXTENSIONS)
            raise FileNotFoundError(f"no {extensions} images under {split_dir!r}; {HOW_TO_GET}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        path, label = self.samples[index]
        with open_regular_file(path) as f:
            try:
                with Image.open(f) as img:
                    image = img.convert("RGB")
            except _UNREADABLE_IMAGE as exc:
                # PIL's own text for an unknown format names only the file object
                detail = "unknown format" if isinstance(exc, UnidentifiedImageError) else exc
                raise DataFileError(path, f"not a readable image ({detail})") from None
        return self.transform(image), label


def load_image_folder(data_path: str, augment: bool = True,
                      image_size: int = 224) -> Tuple[ImageFolder, ImageFolder]:
    """(train, val) from ``data_path/train`` and ``data_path/val``.

    Train: random-resized crop to ``image_size`` + horizontal flip (with
    ``augment``); val: resize the short side to image_size * 256/224 (256 for
    224), centre-crop ``image_size``. Both normalised with ImageNet's mean/std.
    """
    if not isinstance(data_path, (str, os.PathLike)):
        raise ValueError(f"data_path: expected a folder path, got {data_path!r}")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size: expected a positive int, got {image_size!r}")
    data_path = os.fspath(data_path)
    train_dir, val_dir = os.path.join(data_path, "train"), os.path.join(data_path, "val")
    # Check both splits before indexing either: a missing val/ should not wait
    # for a scan of ImageNet's 1.28M train files.
    for split_dir in (train_dir, val_dir):
        if not os.path.isdir(split_dir):
            raise FileNotFoundError(
                f"expected {split_dir!r} with one subfolder of images per class; {HOW_TO_GET}"
            )
    classes = _class_folders(train_dir)
    if not classes:
        raise FileNotFoundError(f"expected class subfolders in {train_dir!r}; {HOW_TO_GET}")
    normalize = Normalize(IMAGENET_MEAN, IMAGENET_STD)
    resize = Resize(round(image_size * 256 / 224))
    val_transform = Compose([resize, CenterCrop(image_size), ToTensor(), normalize])
    train_transform = val_transform
    if augment:
        train_transform = Compose(
            [RandomResizedCrop(image_size), ToTensor(), RandomHorizontalFlip(), normalize]
        )
    return (ImageFolder(train_dir, classes, train_transform),
            ImageFolder(val_dir, classes, val_transform))
