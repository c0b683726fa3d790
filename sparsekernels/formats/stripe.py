"""The stripe-sparse weight format: encode, decode and validate in one place.

A stripe (Meng et al., "Pruning Filter in Filter") is one filter's vector of
``Cin/g`` input-channel weights at one kernel position: ``W[o, :, kh, kw]``.
A weight ``W[Cout, Cin/g, Kh, Kw]`` keeps some stripes and drops the rest whole.

Canonical, serialisable form (CSR over output channels, column = kernel
position ``tap = kh * Kw + kw``):

- ``row_ptr``  int32 ``[Cout + 1]``
- ``tap_idx``  int32 ``[nnz]``: kernel position, strictly increasing within a row
- ``values``   ``[nnz, Cin/g]``: each stripe's weights, contiguous

The kernels also take the transposed view (:class:`StripeTopology`): per
(group, kernel position), the stripes that use it, so that every output
channel sharing a kernel position reads one shifted input once.

Every constructor that takes outside data (``from_state_dict``, ``Stripe(...)``)
runs :meth:`Stripe.validate`, so an out-of-range index never reaches a kernel.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..conv_args import as_int
from .base import (
    SparseConvFormat, check_geometry, check_weight, topology_from_op_args, with_geometry,
)
from .csr import check_csr, rows_of, transpose

CRITERIA = ("l1", "l2", "random")


@with_geometry
class StripeTopology(NamedTuple):
    """A stripe weight as the kernels take it: its index tensors and geometry.

    ``row_ptr``/``tap_idx`` are the CSR over output channels. ``tap_ptr``
    ``[groups * Kh * Kw + 1]`` / ``stripe_idx`` / ``stripe_row`` are its
    transpose: for column ``g * Kh*Kw + tap``, the stripes of group ``g`` at
    that kernel position in increasing output channel (``stripe_row``). All
    int32 on the weight's device. In the custom ops it travels as
    ``as_op_args()``: the five tensors and ``meta`` = shape + [groups].
    """

    row_ptr: torch.Tensor
    tap_idx: torch.Tensor
    tap_ptr: torch.Tensor
    stripe_idx: torch.Tensor
    stripe_row: torch.Tensor
    shape: tuple[int, int, int, int]
    groups: int

    TENSORS = ("row_ptr", "tap_idx", "tap_ptr", "stripe_idx", "stripe_row")
    INDEX_TENSORS = ("row_ptr", "tap_idx")  # saved; the others derive from them

    @property
    def nnz(self) -> int:
        return self.tap_idx.numel()

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / (self.cout * self.taps)

    @property
    def values_shape(self) -> tuple[tuple[int, ...], str]:
        return (self.nnz, self.shape[1]), "[nnz, Cin/g]"

    def to_format(self, values: torch.Tensor) -> "Stripe":
        """The (validated) format of this topology with ``values``."""
        return Stripe(self.row_ptr, self.tap_idx, values, self.shape, self.groups)

    def as_op_args(self) -> tuple[list[torch.Tensor], list[int]]:
        return [getattr(self, f) for f in self.TENSORS], [*self.shape, self.groups]

    @classmethod
    def from_op_args(cls, tensors, meta) -> "StripeTopology":
        return topology_from_op_args(cls, Stripe, tensors, meta)


def _stripes(t: torch.Tensor) -> torch.Tensor:
    """[Cout, Cin/g, Kh, Kw] -> [Cout, Kh*Kw, Cin/g]: row o, column tap."""
    return t.flatten(2).transpose(1, 2)


def decode(values: torch.Tensor, row_ptr, tap_idx, shape) -> torch.Tensor:
    """Dense ``[Cout, Cin/g, Kh, Kw]`` from stripe values (pruned stripes are 0)."""
    cout, cin_g, kh, kw = shape
    s = values.new_zeros(cout, kh * kw, cin_g)
    s[rows_of(row_ptr), tap_idx.long()] = values
    return s.transpose(1, 2).reshape(cout, cin_g, kh, kw)


def gather(dense: torch.Tensor, row_ptr, tap_idx) -> torch.Tensor:
    """``[nnz, Cin/g]``: the kept stripes of a dense weight-shaped tensor."""
    return _stripes(dense)[rows_of(row_ptr), tap_idx.long()]


class Stripe(SparseConvFormat):
    """A stripe-sparse conv weight in CSR form (output channel x kernel position).

    Build it with :meth:`from_dense` (by criterion) or :meth:`from_mask`;
    ``Stripe(row_ptr, tap_idx, values, shape, groups)`` takes the raw arrays
    and validates them.
    """

    INDEX_TENSORS = ("row_ptr", "tap_idx")
    PARAMS = ()
    CRITERIA = CRITERIA
    Topology = StripeTopology

    def __init__(self, row_ptr: torch.Tensor, tap_idx: torch.Tensor, values: torch.Tensor,
                 shape: tuple[int, int, int, int], groups: int = 1):
        self.row_ptr = row_ptr
        self.tap_idx = tap_idx
        self.values = values
        self.shape = tuple(as_int(s, "shape", 1) for s in shape)
        self.groups = groups
        self._topology: Optional[StripeTopology] = None
        self.validate()

    # ---- geometry -------------------------------------------------------
    @property
    def nnz(self) -> int:
        return self.tap_idx.numel()

    @property
    def num_stripes(self) -> int:
        """Stripes a dense weight of this shape has (kept or not)."""
        return self.cout * self.taps

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz / self.num_stripes

    # ---- validation -----------------------------------------------------
    def validate(self) -> "Stripe":
        """Check every invariant a kernel relies on; raise naming the field."""
        cout, cin_g, kh, kw = self._validate_geometry_and_dtypes()
        v = self.values
        nnz = self.tap_idx.numel()
        if tuple(v.shape) != (nnz, cin_g):
            raise ValueError(f"values: expected shape [nnz={nnz}, Cin/g={cin_g}], "
                             f"got {list(v.shape)}")
        check_csr(self.row_ptr, self.tap_idx, cout, kh * kw, names=("row_ptr", "tap_idx"),
                  cols_meaning="kernel positions Kh*Kw")
        return self

    # ---- encode ---------------------------------------------------------
    @classmethod
    def from_mask(cls, weight: torch.Tensor, mask: torch.Tensor, groups: int = 1) -> "Stripe":
        """Keep the stripes ``mask`` keeps; reject a mask that is not stripe-structured."""
        check_weight(weight, groups)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(weight.shape):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected shape {tuple(weight.shape)}, got {got}")
        m = _stripes(mask.to(device=weight.device, dtype=torch.bool))
        any_kept, all_kept = m.any(-1), m.all(-1)
        partial = any_kept != all_kept
        if partial.any():
            o, t = (int(i) for i in torch.nonzero(partial)[0])
            kw = weight.shape[3]
            raise ValueError(f"mask: not stripe structured: stripe (output channel {o}, "
                             f"kh={t // kw}, kw={t % kw}) is partly kept")
        return cls._from_stripe_mask(weight, any_kept, groups)

    @classmethod
    def from_zeros(cls, weight: torch.Tensor, groups: int = 1) -> "Stripe":
        """The stripe format of a weight pruned elsewhere: a stripe
        ``W[o, :, kh, kw]`` is pruned iff all its weights are exactly zero;
        every other weight is kept as stored (zeros included), so decoding
        gives ``weight`` back bit for bit. ``sparsity`` is then the fraction
        of stripes entirely zero."""
        check_weight(weight, groups)
        kept = (weight.detach() != 0).any(1, keepdim=True).expand(weight.shape)
        return cls.from_mask(weight, kept, groups)

    @classmethod
    def pruned(cls, shape: tuple[int, int, int, int], groups: int = 1, device=None,
               dtype=None) -> "Stripe":
        """A fully pruned weight of ``shape`` (no stripe kept); works on any
        device, ``meta`` included, since it reads no data."""
        check_geometry(*shape, groups)
        return cls(torch.zeros(shape[0] + 1, dtype=torch.int32, device=device),
                   torch.zeros(0, dtype=torch.int32, device=device),
                   torch.zeros(0, shape[1], dtype=dtype, device=device), shape, groups)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, sparsity: float, criterion: str = "l2",
                   groups: int = 1, seed: Optional[int] = None) -> "Stripe":
        """Prune ``round(sparsity * Cout * Kh * Kw)`` stripes of one layer.

        ``l1`` / ``l2``: lowest stripe norm first (ties by position).
        ``random``: a uniform sample without replacement (seeded).
        """
        check_weight(weight, groups)
        if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity: expected a number in [0, 1], got {sparsity!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
        stripes = _stripes(weight.detach())
        num = stripes.shape[0] * stripes.shape[1]
        num_pruned = int(math.floor(sparsity * num + 0.5))
        if criterion == "random":
            gen = torch.Generator().manual_seed(0 if seed is None else seed)
            order = torch.randperm(num, generator=gen)
        else:
            p = 1 if criterion == "l1" else 2
            score = stripes.double().norm(p=p, dim=-1).flatten().cpu()
            order = torch.argsort(score, stable=True)
        keep = torch.ones(num, dtype=torch.bool)
        keep[order[:num_pruned]] = False
        return cls._from_stripe_mask(weight, keep.reshape(stripes.shape[:2]).to(weight.device),
                                     groups)

    @classmethod
    def _from_stripe_mask(cls, weight: torch.Tensor, keep: torch.Tensor, groups: int) -> "Stripe":
        rows, taps = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by row, tap
        row_ptr = torch.zeros(keep.shape[0] + 1, dtype=torch.int64, device=weight.device)
        row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=keep.shape[0]), 0)
        return cls(row_ptr.to(torch.int32), taps.to(torch.int32),
                   _stripes(weight.detach())[rows, taps].contiguous(), tuple(weight.shape), groups)

    # ---- decode ---------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The dense ``[Cout, Cin/g, Kh, Kw]`` weight (pruned stripes are 0)."""
        return decode(self.values, self.row_ptr, self.tap_idx, self.shape)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The kept stripes of a dense weight-shaped tensor, shaped like ``values``."""
        return gather(dense, self.row_ptr, self.tap_idx)

    def mask(self) -> torch.Tensor:
        """Bool ``[Cout, Cin/g, Kh, Kw]``: True where a weight is kept."""
        return decode(torch.ones_like(self.values, dtype=torch.bool), self.row_ptr,
                      self.tap_idx, self.shape)

    def _build_topology(self) -> StripeTopology:
        columns = self.groups * self.taps
        if self.device.type == "meta":  # shapes only
            index = torch.empty(self.nnz, dtype=torch.int32, device=self.device)
            transposed = (torch.empty(columns + 1, dtype=torch.int32, device=self.device),
                          index, index)
        else:  # per (group, kernel position), the stripes that use it
            group = torch.div(rows_of(self.row_ptr), self.cout // self.groups,
                              rounding_mode="floor")
            transposed = transpose(self.row_ptr, group * self.taps + self.tap_idx.long(), columns)
        return StripeTopology(self.row_ptr.contiguous(), self.tap_idx.contiguous(), *transposed,
                              self.shape, self.groups)

    def __repr__(self) -> str:
        return (f"Stripe(shape={list(self.shape)}, groups={self.groups}, "
                f"nnz={self.nnz}/{self.num_stripes}, sparsity={self.sparsity:.3f}, "
                f"dtype={self.dtype}, device={self.device})")

