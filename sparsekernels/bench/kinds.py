"""How the benchmark drives each kind of the library's registry
(``sparsekernels.kinds``): one ``Kind`` per registered kind, keyed by its label.

The runners only iterate ``KINDS``; building a format at a level, running its
conv and converting a network go through the registry entry. What is the
benchmark's own per kind is whether the ``--n`` sweep (1xN's block size)
applies and which layers that size does not tile.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from torch import Tensor, nn

from .. import kinds
from ..sparsify import sparsify
from .suites import Layer


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
    def module(self) -> type:
        return self.spec.module

    def sizes(self, ns: list[int]) -> list[Optional[int]]:
        """The block sizes to sweep: ``ns``, or [None] for a kind without one."""
        return list(ns) if self.sized else [None]

    def _params(self, n: Optional[int]) -> dict:
        return {"n": n} if self.sized else {}

    def build(self, w: Tensor, n: Optional[int], sparsity: float, seed: int):
        """A format of ``w`` with a random ``sparsity`` of its entries pruned."""
        return self.spec.format.from_dense(w, sparsity=sparsity, criterion="random", seed=seed,
                                           **self._params(n))

    def conv(self, x: Tensor, fmt, layer: Layer, backend: str) -> Tensor:
        return self.spec.conv2d(x, fmt, None, layer.stride, layer.padding, backend=backend)

    @staticmethod
    def param(fmt) -> Tensor:
        return fmt.values

    @staticmethod
    def param_grad(fmt, dense_grad: Tensor) -> Tensor:
        return fmt.gather(dense_grad)

    def sparsify(self, model: nn.Module, n: Optional[int], sparsity: float, exclude,
                 pad_partial: bool, seed: int, backend: str) -> nn.Module:
        """``model`` with its eligible convs swapped in place for this kind's modules."""
        options = {"n": n, "pad_partial": pad_partial} if self.sized else {}
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
