"""``sparsify(model)``: swap a model's eligible ``nn.Conv2d`` layers for 1xN
block-sparse ones, logging every layer it converts or skips and why.

All arguments and every layer's conversion are checked and built before the
model is touched, so a bad argument or layer leaves the model as it was. A
conv registered under several names (a shared layer) becomes one sparse
module under all of them, so it stays shared.
"""
from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from typing import Iterable, Optional, Union

from torch import nn

from .formats.block1xn import CRITERIA, MAX_BLOCK_HEIGHT
from .nn.block1xn import Block1xNConv2d
from .nn.replace import replace_module
from .ops.backends import BACKENDS
from .conv_args import as_int
from .layer_select import is_depthwise, level_for

log = logging.getLogger("sparsekernels")


def _check_level(where: str, level) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
        raise ValueError(f"sparsity: expected a number in [0, 1] {where}, got {level!r}")


def _check_arguments(n, sparsity, criterion, backend) -> int:
    n = as_int(n, "n", 1, MAX_BLOCK_HEIGHT)
    if isinstance(sparsity, Mapping):
        for pattern, level in sparsity.items():
            _check_level(f"for pattern {pattern!r}", level)
    else:
        _check_level("", sparsity)
    if criterion not in CRITERIA:
        raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    return n


def _convs_by_identity(model: nn.Module) -> list[tuple[list[str], nn.Conv2d]]:
    """Every plain ``nn.Conv2d`` once, with all the names it is registered under."""
    names: dict[int, tuple[list[str], nn.Conv2d]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if type(m) is nn.Conv2d:
            names.setdefault(id(m), ([], m))[0].append(name)
    return list(names.values())


def _skip_reason(names: list[str], conv: nn.Conv2d, n: int, exclude: list[str], pad: bool):
    if any(fnmatch.fnmatchcase(name, p) for name in names for p in exclude):
        return "excluded by the caller"
    if is_depthwise(conv):
        return "depthwise conv (one input channel per group: no block to share)"
    cout_g = conv.out_channels // conv.groups
    if cout_g % n and not pad:
        return f"N={n} does not divide out_channels/groups={cout_g} (pad_partial=False)"
    return None


def _level(names: list[str], sparsity):
    levels = {level_for(name, sparsity) for name in names}
    if len(levels) > 1:
        raise ValueError(f"sparsity: the conv shared as {names} matches different levels "
                         f"{sorted(levels, key=str)}")
    return levels.pop()


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
    :class:`Block1xNConv2d` pruned to 1xN blocks; returns ``model``.

    ``sparsity`` is one level for every layer, or a mapping from layer-name
    patterns (fnmatch) to levels (first match wins; unmatched layers stay
    dense). ``exclude`` lists name patterns to leave dense. Depthwise convs are
    always left dense. A layer whose ``out_channels/groups`` is not a multiple
    of N gets a padded last block row, or is skipped when ``pad_partial=False``.
    """
    n = _check_arguments(n, sparsity, criterion, backend)
    exclude = list(exclude)
    converted = []
    for names, conv in _convs_by_identity(model):
        reason = _skip_reason(names, conv, n, exclude, pad_partial)
        level = None if reason else _level(names, sparsity)
        if reason is None and level is None:
            reason = "no sparsity level matches its name"
        if reason:
            log.info("sparsify: %s left dense: %s", " = ".join(names), reason)
            continue
        sparse = Block1xNConv2d.from_dense(
            conv, n=n, sparsity=level, criterion=criterion, seed=seed, backend=backend
        )
        converted.append((names, sparse))
    for names, sparse in converted:
        for name in names:
            replace_module(model, name, sparse)
        log.info("sparsify: %s -> 1x%d at %.3f block sparsity", " = ".join(names), n,
                 sparse.sparsity)
    return model
