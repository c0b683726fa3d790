"""``PatternConv2d``: a drop-in ``nn.Conv2d`` whose weight is pattern-sparse.

The kept weights are the trainable ``values`` parameter ``[nnz values]``; the
library and the kept kernels are buffers, so fine-tuning never revives a
pruned position or kernel (see :class:`~sparsekernels.nn.base.SparseConv2d`
for all it shares with ``nn.Conv2d``).
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..conv_args import as_int
from ..formats.pattern import Pattern
from ..layer_select import is_depthwise
from ..ops.pattern import OPS
from .base import SparseConv2d


class PatternConv2d(SparseConv2d):
    """Conv2d with a pattern-sparse weight (see ``sparsekernels.formats.Pattern``).

    Build one with :meth:`from_dense` (``num_patterns``, ``entries`` and
    ``require_center`` choose the library, ``sparsity`` the overall level:
    above ``1 - entries/(Kh*Kw)`` whole kernels are dropped); the constructor
    makes a fully pruned layer of the given shape (a target for
    ``load_state_dict``).
    """

    FORMAT = Pattern
    OPS = OPS
    DEFAULT_CRITERION = "l2"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 backend: str = "auto", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, backend, device, dtype, params={})

    @classmethod
    def sparsify_options(cls, num_patterns: int = 8, entries: int = 4,
                         require_center: bool = True) -> dict:
        if not isinstance(require_center, bool):
            raise TypeError(f"require_center: expected a bool, got {require_center!r}")
        return {"num_patterns": as_int(num_patterns, "num_patterns", 1),
                "entries": as_int(entries, "entries", 1), "require_center": require_center}

    @classmethod
    def skip_reason(cls, conv: nn.Conv2d, num_patterns: int = 8, entries: int = 4,
                    require_center: bool = True) -> Optional[str]:
        if is_depthwise(conv):
            return "depthwise conv (one input channel per group: a pattern per single kernel)"
        kh, kw = conv.kernel_size
        if require_center and entries < kh * kw and not (kh % 2 and kw % 2):
            return f"kernel {kh}x{kw} has no centre (require_center=True needs odd sizes)"
        return None
