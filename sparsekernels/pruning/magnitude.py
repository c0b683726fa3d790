"""Unstructured magnitude pruning.

:class:`MagnitudeSparsifier` zeroes the weights of smallest ``|w|``:

- ``scope="global"``: one ranking over every configured tensor, so the
  per-layer ratios fall out of the weights. This is the weight-level baseline
  of "Rethinking the Value of Network Pruning" (a global threshold over all
  conv weights, FC dense: ``magnitude_config(model, s)``) and GSM's final hard
  prune (top ``nonzero_ratio`` by ``|w|`` over conv and FC weights:
  ``include_linear=True``).
- ``scope="layer"``: each tensor is pruned to its own ``sparsity_level``.

Masks are computed from the *masked* weight (what the forward pass sees): a
pruned weight scores 0, so it stays pruned while a schedule raises the level.
Only a live weight that is exactly 0 can tie with it; such ties are broken by
position.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import nn

from .base import MaskSparsifier, Sparsity, check_level, pruned_count, select_layers, smallest

SCOPES = ("global", "layer")


class MagnitudeSparsifier(MaskSparsifier):
    """Unstructured pruning of the smallest ``|w|``.

    ``scope="global"``: exactly ``pruned_count(total, level)`` weights of all
    configured tensors together are pruned; every group must then share one
    ``sparsity_level`` (a uniform target, or one schedule over uniform targets).
    ``scope="layer"``: ``pruned_count(numel, level)`` per tensor.
    """

    def __init__(self, sparsity_level: float = 0.5, scope: str = "global"):
        if scope not in SCOPES:
            raise ValueError(f"scope: expected one of {SCOPES}, got {scope!r}")
        check_level(sparsity_level, "sparsity_level")
        self.scope = scope
        super().__init__(defaults={"sparsity_level": sparsity_level})

    def step(self, use_path: bool = True) -> None:
        if self.scope == "layer":
            return super().step(use_path)
        if not self.enable_mask_update or not self.groups:
            return
        levels = sorted({group["sparsity_level"] for group in self.groups})
        if len(levels) > 1:
            raise ValueError(
                f"sparsity_level: scope='global' ranks all tensors against one level, "
                f"but the groups ask for {levels}; use scope='layer' for per-layer levels"
            )
        with torch.no_grad():
            weights = [getattr(g["module"], g["tensor_name"]) for g in self.groups]
            scores = torch.cat([w.abs().flatten() for w in weights])
            keep = smallest(scores, pruned_count(scores.numel(), levels[0]))
            for group, part in zip(self.groups, keep.split([w.numel() for w in weights])):
                self.set_mask(group["module"], group["tensor_name"], part)

    def update_mask(self, module: nn.Module, tensor_name: str, sparsity_level: float, **kwargs):
        scores = getattr(module, tensor_name).abs().flatten()
        keep = smallest(scores, pruned_count(scores.numel(), sparsity_level))
        self.set_mask(module, tensor_name, keep)


def magnitude_config(
    model: nn.Module, sparsity: Sparsity, *, include_linear: bool = False, exclude: Iterable[str] = ()
) -> list[dict]:
    """Entries for :class:`MagnitudeSparsifier`: every Conv2d weight (stem and
    depthwise included, as the Rethinking weight-level code and GSM do), plus
    every Linear weight when ``include_linear`` (GSM prunes all FC layers)."""

    def skip(name: str, module: nn.Module) -> Optional[str]:
        if isinstance(module, nn.Linear) and not include_linear:
            return "Linear layer (include_linear=False)"
        return None

    return select_layers(model, sparsity, skip, exclude=exclude, caller="magnitude_config")
