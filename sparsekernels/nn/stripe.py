"""``StripeConv2d``: a drop-in ``nn.Conv2d`` whose weight is stripe-sparse.

The kept stripes are the trainable ``values`` parameter ``[nnz, Cin/g]``; the
topology (``row_ptr``, ``tap_idx``) is a buffer, so fine-tuning never revives
a pruned stripe (see :class:`~sparsekernels.nn.base.SparseConv2d` for all it
shares with ``nn.Conv2d``).
"""
from __future__ import annotations

from ..formats.stripe import Stripe
from ..ops.stripe import OPS
from .base import SparseConv2d


class StripeConv2d(SparseConv2d):
    """Conv2d with a stripe-sparse weight (see ``sparsekernels.formats.Stripe``).

    Build one with :meth:`from_dense`; the constructor makes a fully pruned
    layer of the given shape (useful as a target for ``load_state_dict``).
    """

    FORMAT = Stripe
    OPS = OPS
    DEFAULT_CRITERION = "l2"

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0,
                 dilation=1, groups: int = 1, bias: bool = True, padding_mode: str = "zeros",
                 backend: str = "auto", device=None, dtype=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation,
                         groups, bias, padding_mode, backend, device, dtype, params={})
