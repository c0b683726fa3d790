"""``sparsify(from_zeros=True)``: convert a model pruned elsewhere from the
zeros it already has, with no re-pruning.

Each kind reads its units off a weight's zeros in its format's ``from_zeros``
(a unit is pruned iff all its weights are exactly zero); whether the zeros
have the kind's structure is one rule for every kind, here
(:attr:`ZeroReading.fits`). Pruning reparametrizations
(``torch.nn.utils.prune``, and ``torch.nn.utils.parametrize`` as
``torch.ao.pruning`` leaves them before ``squash_mask``) are baked into a copy
of the conv (:func:`effective_conv`), so the model is untouched until
``sparsify`` swaps its layers. ``kind="auto"`` times each fitting kind's
module and the dense conv on the layer's input shape and keeps the fastest.
"""
from __future__ import annotations

import logging
from typing import Callable, NamedTuple, Optional, Union

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize, prune

from .formats.base import SparseConvFormat
from .kinds import KindSpec
from .nn.base import SparseConv2d

log = logging.getLogger("sparsekernels")

# A layer fits a kind when at least this fraction of the kind's units is
# entirely zero (fewer saves too little to pay for the sparse indexing) ...
MIN_STRUCTURED_SPARSITY = 0.05
# ... and those units hold at least this share of the layer's zero weights:
# the zeros they miss are stored and multiplied like any weight, so a kind
# that misses more reads mostly unstructured zeros.
MIN_ZERO_COVERAGE = 0.9
# Timed forward calls per candidate kind for kind="auto" (after one warm-up).
AUTO_REPEATS = 5

# The sparse module for a conv, or why the conv stays dense.
Conversion = Union[SparseConv2d, str]


class ZeroReading(NamedTuple):
    """One kind's reading of one layer's zeros."""

    spec: KindSpec
    format: SparseConvFormat  # the weight as stored, less the kind's all-zero units
    zero_coverage: float  # share of the layer's zero weights inside those units

    @classmethod
    def of(cls, spec: KindSpec, weight: Tensor, groups: int, **options) -> "ZeroReading":
        fmt = spec.format.from_zeros(weight, groups=groups, **options)
        zeros = int((weight == 0).sum())
        dropped = weight.numel() - int(fmt.mask().sum())
        return cls(spec, fmt, dropped / zeros if zeros else 0.0)

    @property
    def structured_sparsity(self) -> float:
        """The fraction of the kind's units entirely zero (from_zeros prunes exactly those)."""
        return self.format.sparsity

    @property
    def fits(self) -> bool:
        """Whether the zeros have the kind's structure: the one rule for every kind."""
        return (self.structured_sparsity >= MIN_STRUCTURED_SPARSITY
                and self.zero_coverage >= MIN_ZERO_COVERAGE)

    def __str__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self.format.params().items())
        return (f"{self.spec.label}{f'({params})' if params else ''} structured sparsity "
                f"{self.structured_sparsity:.3f} holding {self.zero_coverage:.0%} of the zeros")


def effective_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """``conv``, or, when ``torch.nn.utils.prune`` or ``parametrize``
    reparametrizes it, a plain ``nn.Conv2d`` holding what its forward computes
    (the masked weight, zeros baked in, as ``prune.remove`` or
    ``remove_parametrizations(leave_parametrized=True)`` would leave it). A
    new module rather than those calls on ``conv``, so the model stays as it
    was until ``sparsify`` swaps it (and a pruned conv's weight, not a graph
    leaf, cannot be deep-copied)."""
    masks = {hook._tensor_name: hook for hook in conv._forward_pre_hooks.values()
             if isinstance(hook, prune.BasePruningMethod)}
    if not masks and not parametrize.is_parametrized(conv):
        return conv
    with torch.no_grad():
        weight, bias = (masks[name].apply_mask(conv) if name in masks else getattr(conv, name)
                        for name in ("weight", "bias"))
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                      conv.padding, conv.dilation, conv.groups, bias is not None,
                      conv.padding_mode, device="meta")
    plain.weight = nn.Parameter(weight.detach().clone())
    if bias is not None:
        plain.bias = nn.Parameter(bias.detach().clone())
    return plain


def input_shapes(model: nn.Module, convs: list[nn.Conv2d], example_input: Tensor) -> dict:
    """``{id(conv): shape}`` of each conv's input in one forward pass of
    ``example_input`` (eval mode, no grad; every module's mode restored)."""
    shapes: dict[int, torch.Size] = {}

    def record(conv, args) -> None:  # None: a pre-hook's result would replace the args
        shapes.setdefault(id(conv), args[0].shape)

    hooks = [conv.register_forward_pre_hook(record) for conv in convs]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
        for m, training in modes.items():
            m.training = training
    return shapes


DENSE = "dense"  # kind="auto"'s label for leaving the layer as it is


def median_forward_ms(modules: dict[str, nn.Module], shape, device, dtype) -> dict[str, float]:
    """Median milliseconds of each module's forward on one random input of
    ``shape``, interleaved (the benchmark's timer) after one warm-up call each
    (plans and caches are built on the first)."""
    from .bench.timing import median_ms  # here: the bench package imports this one's

    x = torch.randn(shape, device=device, dtype=dtype)
    with torch.no_grad():
        return median_ms({label: (lambda m=m: m(x)) for label, m in modules.items()},
                         torch.device(device), warmup=1, repeat=AUTO_REPEATS)


def zeros_converter(specs: list[KindSpec], options: dict[str, dict], backend: str,
                    shapes: Optional[dict]) -> Callable[[list[str], nn.Conv2d], Conversion]:
    """``convert(names, conv)`` for ``sparsify(from_zeros=True)``: the module
    of the kind in ``specs`` that the conv's zeros fit (``options[slug]``: the
    kind's checked ``zeros_options``), or why it stays dense. Several fitting
    kinds (``kind="auto"``) are timed on the conv's input shape from
    ``shapes``; the fastest is kept."""

    def convert(names: list[str], conv: nn.Conv2d) -> Conversion:
        skipped = {s.label: s.module.zeros_skip_reason(conv, **options[s.slug]) for s in specs}
        readable = [s for s in specs if skipped[s.label] is None]
        if not readable:
            return "; ".join(f"{label}: {why}" for label, why in skipped.items()) \
                if len(specs) > 1 else skipped[specs[0].label]
        dense = effective_conv(conv)
        weight = dense.weight.detach()
        readings = [ZeroReading.of(s, weight, conv.groups, **options[s.slug]) for s in readable]
        fitting = [r for r in readings if r.fits]
        if not fitting:
            return _misfit_reason(readings, weight)
        modules = {r.spec.label: r.spec.module.from_format(
            r.format, dense.bias, dense.stride, dense.padding, dense.dilation,
            dense.padding_mode, backend) for r in fitting}
        if shapes is None:  # one named kind: its zeros fit, so it converts
            return modules.popitem()[1]
        if id(conv) not in shapes:
            return (f"not run by example_input's forward: no input shape to time "
                    f"{sorted(modules)} on")
        # auto: the dense conv is a candidate too, so auto never makes a layer slower.
        times = median_forward_ms({**modules, DENSE: dense}, shapes[id(conv)], weight.device,
                                  weight.dtype)
        fastest = min(times, key=times.get)
        timed = ", ".join(f"{label} {ms:.3f} ms" for label, ms in times.items())
        log.info("sparsify: %s auto: %s -> %s", " = ".join(names), timed, fastest)
        return f"the dense conv is the fastest ({timed})" if fastest == DENSE \
            else modules[fastest]

    return convert


def _misfit_reason(readings: list[ZeroReading], weight: Tensor) -> str:
    kinds = " or ".join(r.spec.label for r in readings)
    return (f"its zeros do not have the {kinds} structure: zero fraction "
            f"{float((weight == 0).double().mean()):.3f}; " + "; ".join(map(str, readings))
            + f" (a kind needs structured sparsity >= {MIN_STRUCTURED_SPARSITY} holding >= "
            f"{MIN_ZERO_COVERAGE:.0%} of the zeros)")
