"""``Block1xNConv2d``: a drop-in ``nn.Conv2d`` whose weight is 1xN block-sparse.

The kept block values are the trainable ``values`` parameter; the topology
(``row_ptr``, ``col_idx``) is a buffer, so fine-tuning never revives a pruned
weight. Loading a state_dict validates the topology before any kernel sees it
(see :class:`~sparsekernels.nn.base.SparseConv2d` for all it shares with
``nn.Conv2d``).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..conv_args import as_int
from ..formats.block1xn import MAX_BLOCK_HEIGHT, Block1xN
from ..layer_select import is_depthwise
from ..ops.block1xn import OPS
from .base import SparseConv2d


class Block1xNConv2d(SparseConv2d):
    """Conv2d with a 1xN block-sparse weight (see ``sparsekernels.formats.Block1xN``).

    Build one with :meth:`from_dense`; the constructor makes a fully pruned
    layer of the given shape (useful as a target for ``load_state_dict``).
    """

    FORMAT = Block1xN
    OPS = OPS
    DEFAULT_CRITERION = "l1"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 n: int = 16, backend: str = "auto", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, backend, device, dtype, params={"n": n})

    @classmethod
    def from_dense(cls, conv: nn.Conv2d, n: int = 16, sparsity: Optional[float] = None,
                   **kwargs) -> "Block1xNConv2d":
        """Prune ``conv`` to 1xN blocks (N = ``n``); see ``SparseConv2d.from_dense``."""
        return super().from_dense(conv, sparsity, n=n, **kwargs)

    @classmethod
    def sparsify_options(cls, n: int = 16, pad_partial: bool = True) -> dict:
        if not isinstance(pad_partial, bool):
            raise TypeError(f"pad_partial: expected a bool, got {pad_partial!r}")
        return {"n": as_int(n, "n", 1, MAX_BLOCK_HEIGHT), "pad_partial": pad_partial}

    @classmethod
    def zeros_options(cls, n: Optional[int] = None, pad_partial: bool = True) -> dict:
        """``n=None``: each layer's N is detected from its zeros (see
        ``Block1xN.from_zeros``); a given ``n`` is used as given."""
        options = cls.sparsify_options(1 if n is None else n, pad_partial)
        return {**options, "n": None if n is None else options["n"]}

    @classmethod
    def zeros_skip_reason(cls, conv: nn.Conv2d, n: Optional[int] = None,
                          pad_partial: bool = True) -> Optional[str]:
        if n is None:  # the detected N always fits (pad_partial bounds the candidates)
            return super().zeros_skip_reason(conv)
        return cls.skip_reason(conv, n, pad_partial)

    @classmethod
    def skip_reason(cls, conv: nn.Conv2d, n: int = 16, pad_partial: bool = True) -> Optional[str]:
        if is_depthwise(conv):
            return "depthwise conv (one input channel per group: no block to share)"
        cout_g = conv.out_channels // conv.groups
        if cout_g % n and not pad_partial:
            return f"N={n} does not divide out_channels/groups={cout_g} (pad_partial=False)"
        return None
