"""How the benchmark drives each kind of the library's registry
(``sparsekernels.kinds``): one ``Kind`` per registered kind, keyed by its label.

The runners only iterate ``KINDS``; building a format at a level, running its
conv and converting a network go through the registry entry. What is the
benchmark's own per kind is its sweep besides the sparsity (a :class:`Setting`:
1xN's block size N from ``--n``; pattern's library size and entries per kernel
from ``--patterns``/``--entries``), how a level is given (pattern also takes
``--connectivity``, the fraction of kernels dropped whole) and which layers a
block size does not tile.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from torch import Tensor, nn

from .. import kinds
from ..sparsify import sparsify
from .suites import Layer

# A 3x3 kernel: the area a pattern network record's requested sparsity is given at.
RECORD_AREA = 9


class Setting(NamedTuple):
    """One point of a kind's sweep besides the level: its record fields
    (None where the kind has no such parameter)."""

    n: Optional[int] = None  # 1xN's block size
    patterns: Optional[int] = None  # pattern: library size
    entries: Optional[int] = None  # pattern: kept positions per kernel


class Level(NamedTuple):
    """How pruned: the overall fraction of weights (``sparsity``), or for
    pattern the fraction of kernels dropped whole on top of the pattern
    (``connectivity``), whose overall level depends on the kernel's area."""

    sparsity: Optional[float] = None
    connectivity: Optional[float] = None


def pattern_level(connectivity: float, entries: int, area: int) -> float:
    """Overall weight sparsity of ``entries``-of-``area`` patterns with a
    ``connectivity`` fraction of the kernels dropped."""
    return 1.0 - (1.0 - connectivity) * min(entries, area) / area


class Kind(NamedTuple):
    spec: kinds.KindSpec
    # Why block size ``n`` does not tile the layer exactly (None when it
    # does): such a layer runs only when the user asks for the padded block.
    misfit: Callable[[Layer, int], Optional[str]] = lambda layer, n: None

    @property
    def sized(self) -> bool:
        """Whether the kind has a block size N (the ``--n`` sweep)."""
        return "n" in self.spec.format.PARAMS

    @property
    def patterned(self) -> bool:
        return self.spec.slug == "pattern"

    @property
    def module(self) -> type:
        return self.spec.module

    def settings(self, ns, patterns, entries) -> list[Setting]:
        """The kind's sweep besides the level, from the command line's lists."""
        if self.sized:
            return [Setting(n=n) for n in ns]
        if self.patterned:
            return [Setting(patterns=p, entries=e) for p in patterns for e in entries]
        return [Setting()]

    def levels(self, sparsities, connectivities) -> list[Level]:
        if self.patterned and connectivities:
            return [Level(connectivity=c) for c in connectivities]
        return [Level(sparsity=s) for s in sparsities]

    def sparsity(self, setting: Setting, level: Level, area: int) -> float:
        """The overall level a layer of kernel ``area`` is pruned to."""
        if level.connectivity is None:
            return level.sparsity
        return pattern_level(level.connectivity, setting.entries, area)

    def record_fields(self, setting: Setting, level: Level, area: int) -> dict:
        return {**setting._asdict(), "connectivity": level.connectivity,
                "sparsity": self.sparsity(setting, level, area)}

    def _options(self, setting: Setting) -> dict:
        if self.sized:
            return {"n": setting.n}
        if self.patterned:
            return {"num_patterns": setting.patterns, "entries": setting.entries}
        return {}

    def build(self, w: Tensor, setting: Setting, level: Level, seed: int):
        """A format of ``w`` with a random pattern of its entries pruned at ``level``."""
        sparsity = self.sparsity(setting, level, w.shape[2] * w.shape[3])
        return self.spec.format.from_dense(w, sparsity=sparsity, criterion="random", seed=seed,
                                           **self._options(setting))

    def conv(self, x: Tensor, fmt, layer: Layer, backend: str) -> Tensor:
        return self.spec.conv2d(x, fmt, None, layer.stride, layer.padding, backend=backend)

    @staticmethod
    def param(fmt) -> Tensor:
        return fmt.values

    @staticmethod
    def param_grad(fmt, dense_grad: Tensor) -> Tensor:
        return fmt.gather(dense_grad)

    def sparsify(self, model: nn.Module, setting: Setting, level: Level, exclude,
                 pad_partial: bool, seed: int, backend: str) -> nn.Module:
        """``model`` with its eligible convs swapped in place for this kind's
        modules (a connectivity level becomes each conv's own overall level)."""
        options = self._options(setting)
        if self.sized:
            options["pad_partial"] = pad_partial
        sparsity = level.sparsity
        if sparsity is None:
            sparsity = {name: self.sparsity(setting, level, m.kernel_size[0] * m.kernel_size[1])
                        for name, m in model.named_modules() if type(m) is nn.Conv2d}
        return sparsify(model, sparsity, kind=self.spec.slug, exclude=exclude, seed=seed,
                        backend=backend, **options)


def _misfit_1xn(layer: Layer, n: int) -> Optional[str]:
    if layer.cout % n:
        return f"N={n} does not divide out_channels={layer.cout}"
    return None


_OWN = {"block1xn": {"misfit": _misfit_1xn}}  # what a kind adds to the defaults above

KINDS: dict[str, Kind] = {
    spec.label: Kind(spec, **_OWN.get(spec.slug, {})) for spec in kinds.KINDS.values()
}
