"""``Block1xNConv2d``: a drop-in ``nn.Conv2d`` whose weight is 1xN block-sparse.

The kept block values are the trainable ``values`` parameter; the topology
(``row_ptr``, ``col_idx``) is a buffer, so fine-tuning never revives a pruned
weight. Loading a state_dict validates the topology before any kernel sees it.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..formats.block1xn import Block1xN, BlockTopology, rows_per_group
from ..ops.block1xn import OPS
from ..ops.sparse_conv import apply_sparse_conv
from ..conv_args import as_int, resolve_conv_args

_TOPOLOGY = ("row_ptr", "col_idx")
_TRANSPOSED = ("col_ptr", "block_idx", "block_row")


class Block1xNConv2d(nn.Module):
    """Conv2d with a 1xN block-sparse weight (see ``sparsekernels.formats.Block1xN``).

    Build one with :meth:`from_dense`; the constructor makes a fully pruned
    layer of the given shape (useful as a target for ``load_state_dict``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        dilation=1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        n: int = 16,
        backend: str = "auto",
        device=None,
        dtype=None,
    ):
        super().__init__()
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        groups = as_int(groups, "groups", 1)
        in_channels = as_int(in_channels, "in_channels", 1)
        if in_channels % groups:
            raise ValueError(f"groups: {groups} does not divide in_channels={in_channels}")
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode: unknown mode {padding_mode!r}")
        # As nn.Conv2d: a non-zeros padding_mode pads the input explicitly
        # (string padding included), then the conv itself pads nothing.
        conv, extra = resolve_conv_args(stride, padding, dilation, groups, (kh, kw))
        (ph, pw), (eh, ew) = conv.padding, extra
        self._mode_padding = (pw, pw + ew, ph, ph + eh)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kh, kw)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.groups, self.padding_mode, self.backend = groups, padding_mode, backend
        empty = Block1xN.pruned(
            (out_channels, in_channels // groups, kh, kw), n, groups, device, dtype
        )
        self.n = n
        self.values = nn.Parameter(empty.values)
        for name in _TOPOLOGY:
            self.register_buffer(name, getattr(empty, name))
        # The layer's geometry [Cout, Cin/g, Kh, Kw, N, groups], saved so that a
        # state from a layer of another shape is refused, as nn.Conv2d does.
        self.register_buffer("meta", empty.state_dict()["meta"].to(device))
        for name in _TRANSPOSED:  # derived from the topology: rebuilt, never saved
            self.register_buffer(name, None, persistent=False)
        self.bias = (
            nn.Parameter(torch.zeros(out_channels, device=device, dtype=dtype)) if bias else None
        )
        self._set_format(empty)

    # ---- construction ---------------------------------------------------
    @classmethod
    def from_dense(
        cls,
        conv: nn.Conv2d,
        n: int = 16,
        sparsity: Optional[float] = None,
        criterion: str = "l1",
        mask: Optional[Tensor] = None,
        seed: Optional[int] = None,
        backend: str = "auto",
    ) -> "Block1xNConv2d":
        """Prune ``conv`` to 1xN blocks: by ``criterion`` at ``sparsity``, or
        keeping exactly the blocks of an explicit 1xN-structured ``mask``."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv: expected an nn.Conv2d, got {type(conv).__name__}")
        if (mask is None) == (sparsity is None):
            raise ValueError("from_dense: give exactly one of sparsity= or mask=")
        w = conv.weight.detach()
        if mask is not None:
            fmt = Block1xN.from_mask(w, mask, n, conv.groups)
        else:
            fmt = Block1xN.from_dense(w, n, sparsity, criterion, conv.groups, seed)
        return cls.from_format(
            fmt, conv.bias, conv.stride, conv.padding, conv.dilation, conv.padding_mode, backend,
        )

    @classmethod
    def from_format(
        cls, fmt: Block1xN, bias: Optional[Tensor] = None, stride=1, padding=0, dilation=1,
        padding_mode: str = "zeros", backend: str = "auto",
    ) -> "Block1xNConv2d":
        """Wrap an existing (validated) ``Block1xN`` weight."""
        cout, cin_g, kh, kw = fmt.shape
        mod = cls(
            cin_g * fmt.groups, cout, (kh, kw), stride, padding, dilation, fmt.groups,
            bias is not None, padding_mode, fmt.n, backend, fmt.device, fmt.dtype,
        )
        mod._set_format(fmt)
        if bias is not None:
            mod.bias.data.copy_(bias.detach())
        return mod

    def _set_format(self, fmt: Block1xN):
        """Adopt a validated format's tensors (topology and values)."""
        self.n = fmt.n
        self.values = nn.Parameter(fmt.values.detach().clone(), self.values.requires_grad)
        topo = fmt.topology()
        for name in _TOPOLOGY + _TRANSPOSED:
            setattr(self, name, getattr(topo, name).clone())

    # ---- views ----------------------------------------------------------
    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    def format(self) -> Block1xN:
        """The weight as a (validated) ``Block1xN``, sharing this module's tensors."""
        return Block1xN(self.row_ptr, self.col_idx, self.values, self.weight_shape, self.n, self.groups)

    def topology(self) -> BlockTopology:
        return BlockTopology(self.row_ptr, self.col_idx, self.col_ptr, self.block_idx,
                             self.block_row, self.weight_shape, self.n, self.groups)

    @property
    def sparsity(self) -> float:
        rows = rows_per_group(self.out_channels, self.groups, self.n) * self.groups
        return 1.0 - self.col_idx.numel() / (rows * (self.in_channels // self.groups))

    def to_dense(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the decoded weight (pruned weights are 0)."""
        fmt = self.format()
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding,
            self.dilation, self.groups, self.bias is not None, self.padding_mode,
            device=fmt.device, dtype=fmt.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(fmt.to_dense())
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    # ---- forward --------------------------------------------------------
    def forward(self, input: Tensor) -> Tensor:
        padding = self.padding
        if self.padding_mode != "zeros":
            input = F.pad(input, self._mode_padding, mode=self.padding_mode)
            padding = 0
        return apply_sparse_conv(OPS, input, self.values, self.topology(), self.bias,
                                 stride=self.stride, padding=padding, dilation=self.dilation,
                                 groups=self.groups, backend=self.backend)

    # ---- serialisation --------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        given = [k for k in ("row_ptr", "col_idx", "meta") if prefix + k in state_dict]
        if "meta" in given and not torch.equal(state_dict[prefix + "meta"].cpu(), self.meta.cpu()):
            error_msgs.append(
                f"size mismatch for {prefix}meta: copying a 1xN layer of geometry "
                f"{state_dict[prefix + 'meta'].tolist()} into one of {self.meta.tolist()} "
                "([out_channels, in_channels/groups, Kh, Kw, N, groups])"
            )
            return
        if {"row_ptr", "col_idx"} & set(given):
            # A new topology: the number of kept blocks may differ from this
            # module's. It is adopted whole and validated before any kernel
            # sees it; a part of it alone would leave the rest stale.
            needed = [prefix + k for k in ("row_ptr", "col_idx", "values", "meta")]
            absent = [k for k in needed if k not in state_dict]
            if absent:
                raise ValueError(f"state_dict: {absent} missing: row_ptr, col_idx, values and "
                                 "meta are loaded together")
            fmt = Block1xN.from_state_dict({k: state_dict[prefix + k] for k in
                                            ("row_ptr", "col_idx", "values", "meta")})
            self._set_format(fmt.to(self.values.device, self.values.dtype))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}, n={self.n}, "
            f"sparsity={self.sparsity:.3f}, backend={self.backend!r}"
        )
