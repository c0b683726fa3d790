"""The few image transforms the data sets need, since torchvision is not a
dependency, and the in-memory dataset that applies them.

All randomness comes from torch's global RNG, so ``torch.manual_seed`` makes a
run reproducible and DataLoader workers (which reseed torch per worker) draw
different augmentations.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset


def _check_size(size: int, name: str = "size") -> None:
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"{name}: expected a positive int, got {size!r}")


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        if not all(callable(t) for t in transforms):
            raise ValueError(f"transforms: expected callables, got {transforms!r}")
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img


class ToTensor:
    """PIL image (converted to RGB) or uint8 CHW tensor -> float32 CHW tensor in [0, 1]."""

    def __call__(self, img) -> Tensor:
        if isinstance(img, Image.Image):
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
            img = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if not isinstance(img, Tensor) or img.dtype != torch.uint8 or img.dim() != 3:
            raise ValueError(f"img: expected a PIL image or a uint8 CHW tensor, got {img!r:.80}")
        return img.float().div_(255)


class Normalize:
    """(x - mean) / std per channel of a CHW float tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        if len(mean) != len(std) or not all(s > 0 for s in std):
            raise ValueError(
                f"std: expected positive values, one per mean, got mean={mean}, std={std}"
            )
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Tensor) -> Tensor:
        return (img - self.mean) / self.std


class RandomCrop:
    """Zero-pad a CHW tensor by ``padding`` on every side, then crop ``size`` x ``size``
    at a random position (the standard CIFAR augmentation)."""

    def __init__(self, size: int, padding: int = 0):
        _check_size(size)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding: expected a non-negative int, got {padding!r}")
        self.size, self.padding = size, padding

    def __call__(self, img: Tensor) -> Tensor:
        if self.padding:
            img = F.pad(img, (self.padding,) * 4)
        h, w = img.shape[-2:]
        if h < self.size or w < self.size:
            raise ValueError(f"img: {h}x{w} (padded) is smaller than the crop size {self.size}")
        top = int(torch.randint(h - self.size + 1, ()))
        left = int(torch.randint(w - self.size + 1, ()))
        return img[..., top:top + self.size, left:left + self.size]


class RandomHorizontalFlip:
    """Mirror a CHW tensor left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = p

    def __call__(self, img: Tensor) -> Tensor:
        return img.flip(-1) if float(torch.rand(())) < self.p else img


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` from a
    PIL image and resize it to ``size`` x ``size`` (Inception-style, as torchvision)."""

    def __init__(self, size: int, scale: Tuple[float, float] = (0.08, 1.0),
                 ratio: Tuple[float, float] = (3 / 4, 4 / 3)):
        _check_size(size)
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale: expected 0 < min <= max <= 1, got {scale!r}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio: expected 0 < min <= max, got {ratio!r}")
        self.size, self.scale, self.ratio = size, scale, ratio

    def crop_box(self, width: int, height: int) -> Tuple[int, int, int, int]:
        """(left, top, right, bottom) of the crop; falls back to a central crop
        after 10 tries, exactly like torchvision."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * float(torch.empty(()).uniform_(*self.scale))
            aspect = math.exp(float(torch.empty(()).uniform_(*log_ratio)))
            w = round(math.sqrt(target_area * aspect))
            h = round(math.sqrt(target_area / aspect))
            if 0 < w <= width and 0 < h <= height:
                top = int(torch.randint(height - h + 1, ()))
                left = int(torch.randint(width - w + 1, ()))
                return left, top, left + w, top + h
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, round(width / self.ratio[0])
        elif in_ratio > self.ratio[1]:
            h, w = height, round(height * self.ratio[1])
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        return left, top, left + w, top + h

    def __call__(self, img: Image.Image) -> Image.Image:
        box = self.crop_box(*img.size)
        return img.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)


class Resize:
    """Resize a PIL image so its shorter side is ``size``, keeping the aspect ratio."""

    def __init__(self, size: int):
        _check_size(size)
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w <= h:
            return img.resize((self.size, int(self.size * h / w)), Image.Resampling.BILINEAR)
        return img.resize((int(self.size * w / h), self.size), Image.Resampling.BILINEAR)


class CenterCrop:
    """Crop the central ``size`` x ``size`` square of a PIL image."""

    def __init__(self, size: int):
        _check_size(size)
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        if w < self.size or h < self.size:
            raise ValueError(f"img: {w}x{h} is smaller than the crop size {self.size}")
        left = int(round((w - self.size) / 2))
        top = int(round((h - self.size) / 2))
        return img.crop((left, top, left + self.size, top + self.size))


class TensorImageDataset(Dataset):
    """Images held in memory as one tensor (uint8 keeps CIFAR at 150 MB instead
    of 600 MB as float), each passed through ``transform`` (if any) when it is read."""

    def __init__(self, images: Tensor, labels: Tensor,
                 transform: Optional[Callable[[Tensor], Tensor]] = None):
        if images.dim() != 4:
            raise ValueError(f"images: expected an NCHW tensor, got shape {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        if transform is not None and not callable(transform):
            raise ValueError(f"transform: expected a callable or None, got {transform!r}")
        self.images, self.labels, self.transform = images, labels.long(), transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, int]:
        image = self.images[index]
        return (image if self.transform is None else self.transform(image)), int(self.labels[index])
