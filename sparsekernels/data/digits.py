"""scikit-learn's 8x8 handwritten digits: 1,797 images bundled with sklearn,
so the default data set needs no download. There is no official split; a
stratified 80/20 split with a fixed seed stands in for one.
"""
from __future__ import annotations

from typing import Tuple

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from .transforms import TensorImageDataset

NUM_CLASSES = 10
INPUT_SHAPE = (1, 8, 8)
TEST_FRACTION = 0.2


def load_digits_split(seed: int = 0) -> Tuple[TensorImageDataset, TensorImageDataset]:
    """(train, test) of 1437 / 360 float32 [1, 8, 8] images in [0, 1] (pixels / 16),
    split by ``train_test_split(stratify=labels, random_state=seed)``."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    digits = load_digits()
    images = torch.from_numpy(digits.images / 16.0).float().unsqueeze(1)
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION,
        stratify=digits.target, random_state=seed,
    )
    return (TensorImageDataset(images[train_idx], labels[train_idx]),
            TensorImageDataset(images[test_idx], labels[test_idx]))
