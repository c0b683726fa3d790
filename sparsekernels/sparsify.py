"""``sparsify(model)``: swap a model's eligible ``nn.Conv2d`` layers for 1xN
block-sparse ones, logging every layer it converts or skips and why."""
from __future__ import annotations

import fnmatch
import logging
from typing import Iterable, Mapping, Optional, Union

from torch import nn

from .nn.block_conv import BlockSparseConv2d
from .nn.replace import replace_module
from .pruning.base import is_depthwise, level_for

log = logging.getLogger("sparsekernels")


def _skip_reason(name: str, conv: nn.Conv2d, n: int, exclude: Iterable[str], pad: bool):
    if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
        return "excluded by the caller"
    if is_depthwise(conv):
        return "depthwise conv (one input channel per group: no block to share)"
    cout_g = conv.out_channels // conv.groups
    if cout_g % n and not pad:
        return f"N={n} does not divide out_channels/groups={cout_g} (pad_partial=False)"
    return None


def sparsify(
    model: nn.Module,
    n: int = 16,
    sparsity: Union[float, Mapping[str, float]] = 0.5,
    criterion: str = "l1",
    exclude: Iterable[str] = (),
    pad_partial: bool = True,
    seed: Optional[int] = None,
    backend: str = "auto",
) -> nn.Module:
    """Replace each eligible ``nn.Conv2d`` of ``model`` (in place) by a
    :class:`BlockSparseConv2d` pruned to 1xN blocks; returns ``model``.

    ``sparsity`` is one level for every layer, or a mapping from layer-name
    patterns (fnmatch) to levels (first match wins; unmatched layers stay
    dense). ``exclude`` lists name patterns to leave dense. Depthwise convs are
    always left dense. A layer whose ``out_channels/groups`` is not a multiple
    of N gets a padded last block row, or is skipped when ``pad_partial=False``.
    """
    exclude = list(exclude)
    convs = [(name, m) for name, m in model.named_modules() if type(m) is nn.Conv2d]
    for name, conv in convs:
        reason = _skip_reason(name, conv, n, exclude, pad_partial)
        level = level_for(name, sparsity)
        if reason is None and level is None:
            reason = "no sparsity level matches its name"
        if reason:
            log.info("sparsify: %s left dense: %s", name, reason)
            continue
        sparse = BlockSparseConv2d.from_dense(
            conv, n=n, sparsity=level, criterion=criterion, seed=seed, backend=backend
        )
        replace_module(model, name, sparse)
        log.info("sparsify: %s -> 1x%d at %.3f block sparsity", name, n, sparse.sparsity)
    return model
