"""``sparsify(model)``: swap a model's eligible ``nn.Conv2d`` layers for
sparse ones of one registered kind (``sparsekernels.kinds``), logging every
layer it converts or skips and why.

All arguments and every layer's conversion are checked and built before the
model is touched, so a bad argument or layer leaves the model as it was. A
conv registered under several names (a shared layer) becomes one sparse
module under all of them, so it stays shared. What is kind-specific (its own
arguments such as 1xN's ``n``, which layers it cannot take) is asked of the
kind's module class (``sparsify_options``, ``skip_reason``).
"""
from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from typing import Iterable, Optional, Union

from torch import nn

from .kinds import KINDS, KindSpec, by_label
from .layer_select import level_for
from .nn.replace import replace_module
from .ops.backends import BACKENDS

log = logging.getLogger("sparsekernels")


def _check_level(where: str, level) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 <= level <= 1:
        raise ValueError(f"sparsity: expected a number in [0, 1] {where}, got {level!r}")


def _kind(kind: str) -> KindSpec:
    """A kind by slug (``"block1xn"``) or label (``"1xN"``)."""
    return KINDS[kind] if kind in KINDS else by_label(kind)


def _check_arguments(spec: KindSpec, sparsity, criterion, backend) -> None:
    if isinstance(sparsity, Mapping):
        for pattern, level in sparsity.items():
            _check_level(f"for pattern {pattern!r}", level)
    else:
        _check_level("", sparsity)
    criteria = spec.format.CRITERIA
    if criterion not in criteria:
        raise ValueError(f"criterion: expected one of {criteria} for kind {spec.label!r}, "
                         f"got {criterion!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def _convs_by_identity(model: nn.Module) -> list[tuple[list[str], nn.Conv2d]]:
    """Every plain ``nn.Conv2d`` once, with all the names it is registered under."""
    names: dict[int, tuple[list[str], nn.Conv2d]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if type(m) is nn.Conv2d:
            names.setdefault(id(m), ([], m))[0].append(name)
    return list(names.values())


def _level(names: list[str], sparsity):
    levels = {level_for(name, sparsity) for name in names}
    if len(levels) > 1:
        raise ValueError(f"sparsity: the conv shared as {names} matches different levels "
                         f"{sorted(levels, key=str)}")
    return levels.pop()


def sparsify(
    model: nn.Module,
    sparsity: Union[float, Mapping[str, float]] = 0.5,
    *,
    kind: str = "1xN",
    criterion: Optional[str] = None,
    exclude: Iterable[str] = (),
    seed: Optional[int] = None,
    backend: str = "auto",
    **options,
) -> nn.Module:
    """Replace each eligible ``nn.Conv2d`` of ``model`` (in place) by the
    sparse module of ``kind`` (``"1xN"``, ``"stripe"``; slugs work too),
    pruned by ``criterion`` (the kind's default when None); returns ``model``.

    ``sparsity`` is one level for every layer, or a mapping from layer-name
    patterns (fnmatch) to levels (first match wins; unmatched layers stay
    dense). ``exclude`` lists name patterns to leave dense. ``options`` are
    the kind's own: for 1xN ``n`` (default 16) and ``pad_partial`` (default
    True: a layer whose ``out_channels/groups`` is not a multiple of N gets a
    padded last block row; False skips it). Depthwise convs are left dense.
    """
    spec = _kind(kind)
    module = spec.module
    options = module.sparsify_options(**options)
    criterion = module.DEFAULT_CRITERION if criterion is None else criterion
    _check_arguments(spec, sparsity, criterion, backend)
    exclude = list(exclude)
    converted = []
    for names, conv in _convs_by_identity(model):
        if any(fnmatch.fnmatchcase(name, p) for name in names for p in exclude):
            reason = "excluded by the caller"
        else:
            reason = module.skip_reason(conv, **options)
        level = None if reason else _level(names, sparsity)
        if reason is None and level is None:
            reason = "no sparsity level matches its name"
        if reason:
            log.info("sparsify: %s left dense: %s", " = ".join(names), reason)
            continue
        params = {k: options[k] for k in spec.format.PARAMS}
        sparse = module.from_dense(conv, sparsity=level, criterion=criterion, seed=seed,
                                   backend=backend, **params)
        converted.append((names, sparse))
    for names, sparse in converted:
        for name in names:
            replace_module(model, name, sparse)
        log.info("sparsify: %s -> %s at %.3f sparsity", " = ".join(names), sparse.describe(),
                 sparse.sparsity)
    return model
