"""How the benchmark drives each kind of the library's registry
(``sparsekernels.kinds``): one ``Kind`` entry per kind, keyed by its label.

The runners only iterate ``KINDS``. What the benchmark needs beyond the
registry (how to build a format at a level, which layers a block size fits)
is written here per kind.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

from torch import Tensor, nn

from .. import kinds
from ..formats.block1xn import gather
from ..sparsify import sparsify
from .suites import Layer


class Kind(NamedTuple):
    """How one sparsity kind prunes a weight, runs its conv and converts a network.

    ``n`` is the kind's block size (N of 1xN).
    """

    # (dense weight, n, sparsity, seed) -> format; the format has to_dense().
    build: Callable[[Tensor, int, float, int], object]
    conv: Callable[[Tensor, object, Layer, str], Tensor]  # (x, format, layer, backend)
    param: Callable[[object], Tensor]  # the trainable tensor of a format
    param_grad: Callable[[object, Tensor], Tensor]  # dense weight grad -> param grad
    # Why ``n`` does not tile the layer exactly (None when it does): such a
    # layer runs only when the user asks for the padded partial block.
    misfit: Callable[[Layer, int], Optional[str]]
    # (model, n, sparsity, exclude globs, pad_partial, seed, backend) -> the
    # model with its eligible convs swapped in place for ``module``s.
    sparsify: Callable[..., nn.Module]
    module: type  # the sparse conv module; its to_dense() gives the nn.Conv2d


def _misfit_1xn(layer: Layer, n: int) -> Optional[str]:
    if layer.cout % n:
        return f"N={n} does not divide out_channels={layer.cout}"
    return None


_BLOCK1XN = kinds.KINDS["block1xn"]

KINDS: dict[str, Kind] = {
    _BLOCK1XN.label: Kind(
        build=lambda w, n, s, seed: _BLOCK1XN.format.from_dense(w, n, s, "random", seed=seed),
        conv=lambda x, f, layer, backend: _BLOCK1XN.conv2d(
            x, f, None, layer.stride, layer.padding, backend=backend),
        param=lambda f: f.values,
        param_grad=lambda f, g: gather(g, f.row_ptr, f.col_idx, f.n, f.groups),
        misfit=_misfit_1xn,
        sparsify=lambda model, n, s, exclude, pad_partial, seed, backend: sparsify(
            model, n, s, exclude=exclude, pad_partial=pad_partial, seed=seed, backend=backend),
        module=_BLOCK1XN.module,
    ),
}
