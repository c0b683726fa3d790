"""``sparsify(model)``: swap a model's eligible ``nn.Conv2d`` layers for
sparse ones of one registered kind (``sparsekernels.kinds``), logging every
layer it converts or skips and why.

All arguments and every layer's conversion are checked and built before the
model is touched, so a bad argument or layer leaves the model as it was. A
conv registered under several names (a shared layer) becomes one sparse
module under all of them, so it stays shared. What is kind-specific (its own
arguments such as 1xN's ``n``, which layers it cannot take) is asked of the
kind's module class (``sparsify_options``, ``skip_reason``; with
``from_zeros=True``, ``zeros_options``, ``zeros_skip_reason``). A conv a
pruning library reparametrized (``torch.nn.utils.prune``, ``parametrize``) is
converted as its forward computes it (``from_zeros.effective_conv``).
"""
from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from typing import Callable, Iterable, Optional, Union

from torch import Tensor, nn
from torch.nn.utils.parametrize import type_before_parametrizations

from .from_zeros import Conversion, effective_conv, input_shapes, zeros_converter
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


# kind= for sparsify(from_zeros=True) to pick, per layer, the fastest kind its zeros fit.
AUTO = "auto"


def _check_arguments(spec: KindSpec, sparsity, criterion) -> None:
    if isinstance(sparsity, Mapping):
        for pattern, level in sparsity.items():
            _check_level(f"for pattern {pattern!r}", level)
    else:
        _check_level("", sparsity)
    criteria = spec.format.CRITERIA
    if criterion not in criteria:
        raise ValueError(f"criterion: expected one of {criteria} for kind {spec.label!r}, "
                         f"got {criterion!r}")


def _convs_by_identity(model: nn.Module) -> list[tuple[list[str], nn.Conv2d]]:
    """Every plain ``nn.Conv2d`` once, with all the names it is registered
    under; a parametrized one too (its class is a generated subclass)."""
    names: dict[int, tuple[list[str], nn.Conv2d]] = {}
    for name, m in model.named_modules(remove_duplicate=False):
        if type_before_parametrizations(m) is nn.Conv2d:
            names.setdefault(id(m), ([], m))[0].append(name)
    return list(names.values())


def _level(names: list[str], sparsity):
    levels = {level_for(name, sparsity) for name in names}
    if len(levels) > 1:
        raise ValueError(f"sparsity: the conv shared as {names} matches different levels "
                         f"{sorted(levels, key=str)}")
    return levels.pop()


def _pruner(kind: str, sparsity, criterion, seed, backend: str,
            options: dict) -> Callable[[list[str], nn.Conv2d], Conversion]:
    """``convert(names, conv)``: the conv pruned to ``kind`` at its level, or
    why it stays dense."""
    spec = _kind(kind)
    module = spec.module
    options = module.sparsify_options(**options)
    criterion = module.DEFAULT_CRITERION if criterion is None else criterion
    sparsity = 0.5 if sparsity is None else sparsity
    _check_arguments(spec, sparsity, criterion)
    params = {k: options[k] for k in spec.format.PARAMS}

    def convert(names: list[str], conv: nn.Conv2d) -> Conversion:
        reason = module.skip_reason(conv, **options)
        level = None if reason else _level(names, sparsity)
        if reason is None and level is None:
            reason = "no sparsity level matches its name"
        return reason or module.from_dense(effective_conv(conv), sparsity=level,
                                           criterion=criterion, seed=seed, backend=backend,
                                           **params)

    return convert


def _zeros_reader(model: nn.Module, kind: str, example_input, backend: str,
                  options: dict) -> Callable[[list[str], nn.Conv2d], Conversion]:
    """``convert(names, conv)``: the conv in ``kind`` (or, for ``"auto"``,
    the fastest kind) its zeros fit, or why it stays dense."""
    if kind != AUTO:
        spec = _kind(kind)
        return zeros_converter([spec], {spec.slug: spec.module.zeros_options(**options)},
                               backend, None)
    if options:
        raise TypeError(f"sparsify: kind='auto' takes no kind option, got {sorted(options)} "
                        "(each kind's defaults are used; name a kind to pass its options)")
    if not isinstance(example_input, Tensor):
        raise ValueError("example_input: kind='auto' times each layer's fitting kinds on its "
                         "input shape, recorded in a forward pass of model(example_input); "
                         f"expected a tensor, got {type(example_input).__name__}")
    specs = list(KINDS.values())
    convs = [conv for _, conv in _convs_by_identity(model)]
    return zeros_converter(specs, {s.slug: s.module.zeros_options() for s in specs}, backend,
                           input_shapes(model, convs, example_input))


def sparsify(
    model: nn.Module,
    sparsity: Union[float, Mapping[str, float], None] = None,
    *,
    kind: str = "1xN",
    criterion: Optional[str] = None,
    exclude: Iterable[str] = (),
    seed: Optional[int] = None,
    backend: str = "auto",
    from_zeros: bool = False,
    example_input: Optional[Tensor] = None,
    **options,
) -> nn.Module:
    """Replace each eligible ``nn.Conv2d`` of ``model`` (in place) by the
    sparse module of ``kind`` (``"1xN"``, ``"stripe"``, ``"pattern"``; slugs
    work too), pruned by ``criterion`` (the kind's default when None); returns
    ``model``.

    ``sparsity`` (default 0.5) is one level for every layer, or a mapping
    from layer-name patterns (fnmatch) to levels (first match wins; unmatched
    layers stay dense). ``exclude`` lists name patterns to leave dense.
    ``options`` are the kind's own: for 1xN ``n`` (default 16) and
    ``pad_partial`` (default True: a layer whose ``out_channels/groups`` is
    not a multiple of N gets a padded last block row; False skips it). For
    pattern ``num_patterns``, ``entries``, ``require_center``. Depthwise convs
    are left dense.

    ``from_zeros=True`` prunes nothing: each conv becomes ``kind`` exactly as
    its zeros are (a unit of the kind is pruned iff all its weights are zero,
    the rest kept as stored, so outputs are unchanged) when the zeros have the
    kind's structure (``from_zeros.ZeroReading.fits``), and stays dense,
    logged with its fractions, when not. ``sparsity``, ``criterion`` and
    ``seed`` are then errors, not ignored. 1xN takes ``n`` (default: detected
    per layer) and ``pad_partial``; the other kinds take no option.
    ``kind="auto"`` picks per layer the fastest kind the zeros fit, timed on
    the layer's input shape from one forward pass of ``example_input``
    (required). Load a checkpoint's state_dict into the model first.
    """
    if not isinstance(from_zeros, bool):
        raise TypeError(f"from_zeros: expected a bool, got {from_zeros!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if from_zeros:
        for name, value in (("sparsity", sparsity), ("criterion", criterion), ("seed", seed)):
            if value is not None:
                raise ValueError(f"{name}: not used with from_zeros=True (each layer's "
                                 f"structure and sparsity are read from its zeros), got {value!r}")
        if kind != AUTO and example_input is not None:
            raise ValueError("example_input: only kind='auto' uses it")
        convert = _zeros_reader(model, kind, example_input, backend, options)
    else:
        if kind == AUTO:
            raise ValueError("kind: 'auto' needs from_zeros=True (it picks among the kinds a "
                             "layer's zeros fit)")
        if example_input is not None:
            raise ValueError("example_input: only kind='auto' (with from_zeros=True) uses it")
        convert = _pruner(kind, sparsity, criterion, seed, backend, options)
    exclude = list(exclude)
    converted = []
    for names, conv in _convs_by_identity(model):
        if any(fnmatch.fnmatchcase(name, p) for name in names for p in exclude):
            sparse = "excluded by the caller"
        else:
            sparse = convert(names, conv)
        if isinstance(sparse, str):
            log.info("sparsify: %s left dense: %s", " = ".join(names), sparse)
        else:
            converted.append((names, sparse))
    for names, sparse in converted:
        for name in names:
            replace_module(model, name, sparse)
        log.info("sparsify: %s -> %s at %.3f sparsity", " = ".join(names), sparse.describe(),
                 sparse.sparsity)
    return model
