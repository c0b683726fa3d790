"""Classification metrics, summed on the device and all-reduced across ranks."""
from __future__ import annotations

from typing import Dict, Iterable, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their target among the ``k`` largest logits."""
    top = logits.topk(k, dim=1).indices
    return (top == targets.unsqueeze(1)).any(dim=1).sum()


class MetricSums:
    """Running sums of loss and top-1/top-5 hits, kept on the device so that
    no batch forces a host sync, and the sample count, known on the host."""

    def __init__(self, device: torch.device):
        # float64: hit counts stay exact up to 2**53 samples.
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)
        self.count = 0
        self.num_classes = 0

    def add(self, loss_sum: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.num_classes = logits.shape[1]
        hits1 = topk_correct(logits, targets, 1)
        hits5 = (topk_correct(logits, targets, 5) if self.num_classes >= 5
                 else torch.zeros_like(hits1))
        self.totals += torch.stack([loss_sum.detach().double(), hits1.double(), hits5.double()])
        self.count += targets.numel()

    def reduce(self) -> Dict[str, Optional[float]]:
        """Mean loss and top-1/top-5 accuracy (fractions in [0, 1]) over all
        ranks; top-5 is None for fewer than 5 classes."""
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.totals.device)
        totals = torch.cat([self.totals, count])
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(totals)
        loss, top1, top5, count = totals.tolist()
        if count == 0:
            raise ValueError("no samples were seen: is the dataset empty?")
        return {
            "loss": loss / count,
            "top1": top1 / count,
            "top5": top5 / count if self.num_classes >= 5 else None,
        }


def _device_of(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable,
             device: Optional[torch.device] = None) -> Dict[str, Optional[float]]:
    """Mean cross-entropy (no label smoothing) and top-1/top-5 accuracy
    (fractions in [0, 1]; top-5 None when there are fewer than 5 classes) of
    ``model`` over the ``(inputs, targets)`` batches of ``loader``. Runs on
    ``device`` (the model is moved there, in place) or else where the model is.

    Under an initialised process group the sums are all-reduced, so each
    rank may pass its own shard and all get the global numbers; a rank that
    passes the whole set gets the right numbers too. Pass the unwrapped
    module: a DDP forward is a collective, and shards of unequal length would
    hang it. The model is put in eval mode and its mode restored after.
    """
    if device is not None:
        model.to(device)
    device = _device_of(model)
    was_training = model.training
    model.eval()
    sums = MetricSums(device)
    try:
        for inputs, targets in loader:
            inputs = inputs.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            logits = model(inputs).float()
            sums.add(F.cross_entropy(logits, targets, reduction="sum"), logits, targets)
    finally:
        model.train(was_training)
    return sums.reduce()
