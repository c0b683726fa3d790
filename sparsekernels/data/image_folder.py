"""ImageNet-style folder trees: ``root/train/<class>/<image>`` and
``root/val/<class>/<image>``, read lazily with PIL. Classes are the sorted
train subfolder names, so label i means the same class in both splits.
"""
from __future__ import annotations

import os
from typing import Callable, List, Sequence, Tuple

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from .transforms import (CenterCrop, Compose, Normalize, RandomHorizontalFlip, RandomResizedCrop,
                         Resize, ToTensor)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
HOW_TO_GET = ("for ImageNet, download ILSVRC2012 from https://image-net.org and sort the "
              "validation images into one folder per class (e.g. with valprep.sh)")


def _class_folders(split_dir: str) -> List[str]:
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def _image_files(class_dir: str) -> List[str]:
    found = []
    for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
        dirnames.sort()  # os.walk visits subfolders in this order: keep it reproducible
        found += [os.path.join(dirpath, f) for f in sorted(filenames)
                  if f.lower().endswith(IMAGE_EXTENSIONS)]
    return found


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
        self.classes = list(classes)
        self.samples = [(path, label_of[name]) for name in present
                        for path in _image_files(os.path.join(split_dir, name))]
        if not self.samples:
            extensions = "/".join(IMAGE_EXTENSIONS)
            raise FileNotFoundError(f"no {extensions} images under {split_dir!r}; {HOW_TO_GET}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        path, label = self.samples[index]
        with Image.open(path) as img:
            image = img.convert("RGB")
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
