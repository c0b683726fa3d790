"""PatDNN-style kernel-pattern pruning plus connectivity pruning, as a torch.ao sparsifier.

Per layer (a conv weight ``W[Cout, Cin/g, Kh, Kw]``; a Linear is a 1x1 conv):

1. **Pattern library.** Every kernel ``W[o, i]`` proposes the pattern of its
   ``entries`` largest-``|w|`` positions. With ``require_center=True``
   (PatDNN's rule: all its patterns keep the central weight) the centre is
   always one of them and the other ``entries - 1`` are the largest of the
   rest; it needs odd Kh and Kw. A candidate's score is
   the total ``|w|^2`` it keeps, summed over the kernels proposing it; the
   ``num_patterns`` best distinct candidates form the library (ties in a
   fixed order of the patterns, so the library is deterministic).
2. **Assignment.** Each kernel gets the library pattern keeping the most of
   its ``|w|^2`` (ties: the lower pattern id).
3. **Connectivity pruning.** Whole kernels with the smallest remaining L2 norm
   are dropped (ties: position order).

``sparsity_level`` is the layer's overall weight sparsity. With
``kept = min(entries, Kh*Kw)`` positions per kernel, the pattern alone gives
the floor ``1 - kept/(Kh*Kw)`` (5/9 for 4 of 9). A level in ``(0, floor]``
applies the pattern only, so a gradual schedule ramps through the pattern
first; level 0 leaves the layer dense. Above the floor, with
``kernels = Cout*Cin/g``, ``zeros = round(numel * level)`` and the pattern's
own zeros ``P = kernels * (Kh*Kw - kept)``, exactly

    dropped kernels = round((zeros - P) / kept)   (halves up, clamped to [0, kernels])

so the mask has exactly ``P + dropped * kept`` zeros, within ``kept/2`` of
``round(numel * level)``. When ``kept == Kh*Kw`` there is no pattern: the
library is the single full kernel and pruning is connectivity only; for 1x1
layers and Linear (``kept = 1``) that leaves exactly ``round(numel * level)``
zeros.

Per layer, ``sparsifier.state[tensor_fqn]`` holds ``"pattern_library"``
(``[k, Kh, Kw]`` bool, ``k <= num_patterns``, most useful first) and
``"pattern_id"`` (``[Cout, Cin/g]`` int64 into the library, -1 = dropped
kernel): what a pattern sparse format is built from.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .base import (
    MaskSparsifier,
    Sparsity,
    as_conv_weight,
    check_conv_or_linear,
    check_level,
    check_positive_int,
    paper_skip_rule,
    pruned_count,
    select_layers,
    smallest,
)


def dropped_kernel_count(kernels: int, area: int, kept: int, level: float) -> int:
    """Kernels connectivity pruning drops: ``round((zeros - P) / kept)``
    halves up, in integers, clamped to ``[0, kernels]`` (see the module doc)."""
    excess = pruned_count(kernels * area, level) - kernels * (area - kept)
    return min(kernels, max(0, (2 * excess + kept) // (2 * kept)))


def _check_center(kh: int, kw: int, entries: int, require_center: bool, where: str) -> None:
    has_pattern = entries < kh * kw
    if has_pattern and require_center and not (kh % 2 and kw % 2):
        raise ValueError(
            f"{where}require_center needs odd kernel sizes, got {kh}x{kw}; pass require_center=False"
        )


def _distinct_rows(rows: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.unique(rows, dim=0, return_inverse=True)`` for bool rows, via
    int64 bit codes when they fit: several times faster on big layers."""
    area = rows.shape[1]
    if area > 62:
        return torch.unique(rows, dim=0, return_inverse=True)
    bits = 1 << torch.arange(area, device=rows.device)
    codes, inverse = torch.unique((rows.long() * bits).sum(1), return_inverse=True)
    return (codes[:, None] & bits) != 0, inverse


def _library(energy: Tensor, kept: int, num_patterns: int, center: Optional[int]) -> Tensor:
    """``[k, area]`` bool: the ``num_patterns`` best distinct candidate patterns."""
    ranked = energy.clone()
    if center is not None:
        ranked[:, center] = float("inf")
    top = torch.argsort(ranked, dim=1, descending=True, stable=True)[:, :kept]
    candidates = torch.zeros_like(energy, dtype=torch.bool).scatter_(1, top, True)
    distinct, which = _distinct_rows(candidates)
    score = energy.new_zeros(distinct.shape[0]).index_add_(0, which, (energy * candidates).sum(1))
    return distinct[torch.argsort(score, descending=True, stable=True)[:num_patterns]]


def assign_patterns(
    weight: Tensor, level: float, *, num_patterns: int = 8, entries: int = 4, require_center: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Pattern + connectivity pruning of one ``[Cout, Cin/g, Kh, Kw]`` weight.

    Returns ``(keep, library, pattern_id)``: ``keep`` bool of the weight's
    shape, ``library`` ``[k, Kh, Kw]`` bool, ``pattern_id`` ``[Cout, Cin/g]``
    int64 (-1 = dropped). Level 0 returns the full kernel as the only pattern.
    """
    cout, cin_per_group, kh, kw = weight.shape
    _check_center(kh, kw, entries, require_center, "")
    area = kh * kw
    kept = min(entries, area)
    energy = weight.detach().double().square().reshape(-1, area)
    if level == 0 or kept == area:
        library = torch.ones(1, area, dtype=torch.bool, device=weight.device)
    else:
        center = (kh // 2) * kw + kw // 2 if require_center else None
        library = _library(energy, kept, num_patterns, center)
    kept_energy = energy @ library.double().T
    pattern_id = kept_energy.argmax(1)
    remaining = kept_energy.gather(1, pattern_id[:, None]).squeeze(1)
    dropped = dropped_kernel_count(energy.shape[0], area, kept, level) if level else 0
    pattern_id[~smallest(remaining, dropped)] = -1
    keep = library[pattern_id.clamp(min=0)] & (pattern_id >= 0)[:, None]
    library = library.reshape(-1, kh, kw)
    return keep.reshape(weight.shape), library, pattern_id.reshape(cout, cin_per_group)


class PatternSparsifier(MaskSparsifier):
    """Kernel-pattern + connectivity pruning to each layer's ``sparsity_level``
    (see the module docstring for what is exact). Settings, overridable per
    config entry: ``num_patterns`` (library size k), ``entries`` (kept
    positions per kernel), ``require_center`` (needs odd Kh and Kw)."""

    def __init__(
        self,
        *,
        sparsity_level: float = 0.5,
        num_patterns: int = 8,
        entries: int = 4,
        require_center: bool = True,
    ):
        check_level(sparsity_level, "sparsity_level")
        check_positive_int(num_patterns, "num_patterns")
        check_positive_int(entries, "entries")
        super().__init__(defaults={
            "sparsity_level": sparsity_level, "num_patterns": num_patterns,
            "entries": entries, "require_center": require_center,
        })

    def check_group(self, group: dict) -> None:
        super().check_group(group)
        fqn = group["tensor_fqn"]
        check_conv_or_linear(group, "pattern pruning")
        check_positive_int(group["num_patterns"], f"{fqn}: num_patterns")
        check_positive_int(group["entries"], f"{fqn}: entries")
        _, _, kh, kw = as_conv_weight(group["module"].weight).shape
        _check_center(kh, kw, group["entries"], group["require_center"], f"{fqn}: ")

    def update_mask(self, module: nn.Module, tensor_name: str, *, tensor_fqn: str,
                    sparsity_level: float, num_patterns: int, entries: int,
                    require_center: bool, **kwargs):
        weight = getattr(module, tensor_name)
        keep, library, pattern_id = assign_patterns(
            as_conv_weight(weight), sparsity_level, num_patterns=num_patterns,
            entries=entries, require_center=require_center,
        )
        self.set_mask(module, tensor_name, keep)
        # A plain dict after load_state_dict, so no defaultdict to lean on.
        state = self.state.setdefault(tensor_fqn, {})
        state["pattern_library"], state["pattern_id"] = library, pattern_id


def pattern_config(
    model: nn.Module,
    sparsity: Sparsity,
    *,
    prune_classifier: bool = False,
    prune_stem: bool = False,
    exclude: Iterable[str] = (),
    image_channels: Optional[int] = None,
) -> list[dict]:
    """Config entries ``{"tensor_fqn", "sparsity_level"}`` for
    :class:`PatternSparsifier`, selecting layers as ``block1xn_config`` does
    (stem, depthwise convs and, unless ``prune_classifier``, the classifier
    stay dense; skipped layers are logged)."""
    rule = paper_skip_rule(model, prune_classifier=prune_classifier, prune_stem=prune_stem,
                           image_channels=image_channels)
    return select_layers(model, sparsity, rule, exclude=exclude, caller="pattern_config")
