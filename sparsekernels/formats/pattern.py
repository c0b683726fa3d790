"""The pattern-sparse weight format: encode, decode and validate in one place.

Each ``Kh x Kw`` kernel ``W[o, i]`` of a weight ``W[Cout, Cin/g, Kh, Kw]``
keeps the positions of one pattern from a small per-layer library, or is
dropped whole (PatDNN / PCONV: kernel patterns plus connectivity pruning).
A position is a tap ``t = kh * Kw + kw``.

Canonical, serialisable form (two CSRs):

- the library, CSR over patterns: ``pattern_ptr`` int32 ``[P + 1]`` and
  ``pattern_taps`` int32, each pattern's taps strictly increasing, every
  pattern non-empty (any size up to ``Kh*Kw``; ``P >= 1``);
- the kept kernels, CSR over output channels: ``row_ptr`` int32
  ``[Cout + 1]``, ``chan_idx`` int32 ``[nnz]`` (input channel within the
  group, strictly increasing within a row), ``pattern_idx`` int32 ``[nnz]``;
- ``values`` ``[nnz values]``, flat: each kept kernel's weights, one per tap of
  its pattern in tap order, kernels in CSR order.

The kernels also take derived views (:class:`PatternTopology`): where each
kernel's values start (``value_ptr``), the tap of every value
(``value_tap``), and the transpose over input channels (``col_ptr``,
``kernel_idx``, ``kernel_row``) for grad-input. Whatever plan a backend
builds from these (its own kernel order, tiles) is its business: the format's
order is the only one a caller sees.

Every constructor that takes outside data (``from_state_dict``,
``Pattern(...)``) runs :meth:`Pattern.validate`, so an out-of-range index
never reaches a kernel.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..conv_args import as_int
from ..pruning.pattern import assign_patterns, dropped_kernel_count
from .base import (
    SparseConvFormat, check_geometry, check_weight, topology_from_op_args, with_geometry,
)
from .csr import check_csr, rows_of, transpose

CRITERIA = ("l2", "random")

# The most distinct kernel masks ``from_zeros`` reads as a pattern library.
# Pattern pruning keeps a handful (PatDNN and PCONV 4 to 12, this library's
# pruning 8 by default); 32 leaves room for such a library plus its partly
# zero kernels, while unstructured zeros give hundreds (a 3x3 kernel has 512
# masks), where a per-pattern schedule no longer groups any work.
MAX_INFERRED_PATTERNS = 32


@with_geometry
class PatternTopology(NamedTuple):
    """A pattern weight as the kernels take it: its index tensors and geometry.

    All int32 on the weight's device (see ``csrc/include/sparsekernels/
    pattern.h`` for each field). In the custom ops it travels as
    ``as_op_args()``: the ten tensors and ``meta`` = shape + [groups].
    """

    pattern_ptr: torch.Tensor
    pattern_taps: torch.Tensor
    row_ptr: torch.Tensor
    chan_idx: torch.Tensor
    pattern_idx: torch.Tensor
    value_ptr: torch.Tensor
    value_tap: torch.Tensor
    col_ptr: torch.Tensor
    kernel_idx: torch.Tensor
    kernel_row: torch.Tensor
    shape: tuple[int, int, int, int]
    groups: int

    TENSORS = ("pattern_ptr", "pattern_taps", "row_ptr", "chan_idx", "pattern_idx",
               "value_ptr", "value_tap", "col_ptr", "kernel_idx", "kernel_row")
    # saved; the others derive from them
    INDEX_TENSORS = ("pattern_ptr", "pattern_taps", "row_ptr", "chan_idx", "pattern_idx")

    @property
    def nnz(self) -> int:
        return self.chan_idx.numel()

    @property
    def nnz_values(self) -> int:
        return self.value_tap.numel()

    @property
    def num_patterns(self) -> int:
        return self.pattern_ptr.numel() - 1

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnz_values / (self.cout * self.shape[1] * self.taps)

    @property
    def values_shape(self) -> tuple[tuple[int, ...], str]:
        return (self.nnz_values,), "[nnz values]"

    def to_format(self, values: torch.Tensor) -> "Pattern":
        """The (validated) format of this topology with ``values``."""
        return Pattern(self.pattern_ptr, self.pattern_taps, self.row_ptr, self.chan_idx,
                       self.pattern_idx, values, self.shape, self.groups)

    def as_op_args(self) -> tuple[list[torch.Tensor], list[int]]:
        return [getattr(self, f) for f in self.TENSORS], [*self.shape, self.groups]

    @classmethod
    def from_op_args(cls, tensors, meta) -> "PatternTopology":
        return topology_from_op_args(cls, Pattern, tensors, meta)


def library_csr(library: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pattern_ptr, pattern_taps)`` of a bool ``[P, Kh, Kw]`` library."""
    flat = library.flatten(1)
    rows, taps = torch.nonzero(flat, as_tuple=True)
    ptr = torch.zeros(flat.shape[0] + 1, dtype=torch.int64, device=library.device)
    ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=flat.shape[0]), 0)
    return ptr.to(torch.int32), taps.to(torch.int32)


def _value_layout(pattern_ptr, pattern_taps, pattern_idx):
    """``(value_ptr, value_tap, value_kernel)`` of kernels with these patterns."""
    sizes = (pattern_ptr[1:] - pattern_ptr[:-1]).long()[pattern_idx.long()]
    value_ptr = torch.zeros(sizes.numel() + 1, dtype=torch.int64, device=sizes.device)
    value_ptr[1:] = torch.cumsum(sizes, 0)
    kernel = torch.repeat_interleave(torch.arange(sizes.numel(), device=sizes.device), sizes)
    within = torch.arange(kernel.numel(), device=sizes.device) - value_ptr[kernel]
    start = pattern_ptr.long()[pattern_idx.long()][kernel]
    return value_ptr.to(torch.int32), pattern_taps[start + within].to(torch.int32), kernel


class Pattern(SparseConvFormat):
    """A pattern-sparse conv weight: a per-layer pattern library and, per kept
    kernel, its input channel, pattern and values.

    Build it with :meth:`from_dense` (PatDNN's magnitude rule), :meth:`from_ids`
    (an explicit library and per-kernel pattern ids, e.g. the training layer's)
    or :meth:`from_mask`; ``Pattern(pattern_ptr, pattern_taps, row_ptr,
    chan_idx, pattern_idx, values, shape, groups)`` takes the raw arrays and
    validates them.
    """

    INDEX_TENSORS = PatternTopology.INDEX_TENSORS
    PARAMS = ()
    CRITERIA = CRITERIA
    Topology = PatternTopology

    def __init__(self, pattern_ptr: torch.Tensor, pattern_taps: torch.Tensor,
                 row_ptr: torch.Tensor, chan_idx: torch.Tensor, pattern_idx: torch.Tensor,
                 values: torch.Tensor, shape: tuple[int, int, int, int], groups: int = 1):
        self.pattern_ptr = pattern_ptr
        self.pattern_taps = pattern_taps
        self.row_ptr = row_ptr
        self.chan_idx = chan_idx
        self.pattern_idx = pattern_idx
        self.values = values
        self.shape = tuple(as_int(s, "shape", 1) for s in shape)
        self.groups = groups
        self._topology: Optional[PatternTopology] = None
        self.validate()

    # ---- geometry -------------------------------------------------------
    @property
    def nnz(self) -> int:
        """Kept kernels."""
        return self.chan_idx.numel()

    @property
    def num_patterns(self) -> int:
        return self.pattern_ptr.numel() - 1

    @property
    def num_kernels(self) -> int:
        """Kernels a dense weight of this shape has (kept or not)."""
        return self.cout * self.cin_per_group

    @property
    def sparsity(self) -> float:
        return 1.0 - self.values.numel() / (self.num_kernels * self.taps)

    @property
    def connectivity_sparsity(self) -> float:
        """The fraction of kernels dropped whole."""
        return 1.0 - self.nnz / self.num_kernels

    # ---- validation -----------------------------------------------------
    def validate(self) -> "Pattern":
        """Check every invariant a kernel relies on; raise naming the field."""
        cout, cin_g, kh, kw = self._validate_geometry_and_dtypes()
        v = self.values
        if v.dim() != 1:
            raise ValueError(f"values: expected a 1-D tensor [nnz values], got shape "
                             f"{list(v.shape)}")
        num_patterns = self.pattern_ptr.numel() - 1
        if num_patterns < 1:
            raise ValueError("pattern_ptr: expected at least one pattern (2 entries), got "
                             f"{self.pattern_ptr.numel()}")
        check_csr(self.pattern_ptr, self.pattern_taps, num_patterns, kh * kw,
                  names=("pattern_ptr", "pattern_taps"), cols_meaning="kernel positions Kh*Kw")
        check_csr(self.row_ptr, self.chan_idx, cout, cin_g, names=("row_ptr", "chan_idx"),
                  cols_meaning="input channels per group")
        nnz = self.chan_idx.numel()
        if self.pattern_idx.numel() != nnz:
            raise ValueError(f"pattern_idx: expected {nnz} entries (one per kept kernel), got "
                             f"{self.pattern_idx.numel()}")
        if v.device.type == "meta":
            return self
        sizes = (self.pattern_ptr[1:] - self.pattern_ptr[:-1]).cpu()
        if (sizes == 0).any():
            raise ValueError(f"pattern_taps: pattern {int(torch.nonzero(sizes == 0)[0])} is "
                             f"empty (every pattern keeps at least one position)")
        ids = self.pattern_idx.long().cpu()
        if nnz and (ids.min() < 0 or ids.max() >= num_patterns):
            bad = int(torch.nonzero((ids < 0) | (ids >= num_patterns))[0])
            raise ValueError(f"pattern_idx: entry {bad} = {int(ids[bad])} is out of range "
                             f"[0, {num_patterns}) (patterns in the library)")
        want = int(sizes.long()[ids].sum()) if nnz else 0
        if v.numel() != want:
            raise ValueError(f"values: expected {want} entries (the kept kernels' pattern "
                             f"sizes), got {v.numel()}")
        return self

    # ---- encode ---------------------------------------------------------
    @classmethod
    def from_ids(cls, weight: torch.Tensor, library: torch.Tensor, pattern_id: torch.Tensor,
                 groups: int = 1) -> "Pattern":
        """Keep, in each kernel ``W[o, i]``, the positions of library pattern
        ``pattern_id[o, i]`` (``-1``: the kernel is dropped). ``library`` is
        bool ``[P, Kh, Kw]``; this is what the training layer's pattern method
        saves."""
        check_weight(weight, groups)
        cout, cin_g, kh, kw = weight.shape
        if (not isinstance(library, torch.Tensor) or library.dtype != torch.bool
                or tuple(library.shape[1:]) != (kh, kw) or library.dim() != 3):
            got = (f"{library.dtype} {list(library.shape)}" if isinstance(library, torch.Tensor)
                   else type(library).__name__)
            raise ValueError(f"library: expected a bool tensor [P, {kh}, {kw}], got {got}")
        if (not isinstance(pattern_id, torch.Tensor) or pattern_id.is_floating_point()
                or pattern_id.dtype == torch.bool or tuple(pattern_id.shape) != (cout, cin_g)):
            got = (f"{pattern_id.dtype} {list(pattern_id.shape)}"
                   if isinstance(pattern_id, torch.Tensor) else type(pattern_id).__name__)
            raise ValueError(f"pattern_id: expected integers [{cout}, {cin_g}], got {got}")
        ids = pattern_id.to(weight.device, torch.int64)
        if ids.numel() and (ids.min() < -1 or ids.max() >= library.shape[0]):
            raise ValueError(f"pattern_id: expected ids in [-1, {library.shape[0]}), got "
                             f"[{int(ids.min())}, {int(ids.max())}]")
        pattern_ptr, pattern_taps = library_csr(library.to(weight.device))
        rows, chans = torch.nonzero(ids >= 0, as_tuple=True)  # row-major: CSR order
        row_ptr = torch.zeros(cout + 1, dtype=torch.int64, device=weight.device)
        row_ptr[1:] = torch.cumsum(torch.bincount(rows, minlength=cout), 0)
        pattern_idx = ids[rows, chans].to(torch.int32)
        _, value_tap, kernel = _value_layout(pattern_ptr, pattern_taps, pattern_idx)
        kernels = weight.detach().flatten(2)
        values = kernels[rows[kernel], chans[kernel], value_tap.long()].contiguous()
        return cls(pattern_ptr, pattern_taps, row_ptr.to(torch.int32), chans.to(torch.int32),
                   pattern_idx, values, tuple(weight.shape), groups)

    @classmethod
    def from_mask(cls, weight: torch.Tensor, mask: torch.Tensor, groups: int = 1) -> "Pattern":
        """Keep exactly the weights ``mask`` keeps: every kernel's kept
        positions are its pattern, the library is the distinct non-empty ones
        (an all-zero kernel is dropped)."""
        check_weight(weight, groups)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(weight.shape):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected shape {tuple(weight.shape)}, got {got}")
        cout, cin_g, kh, kw = weight.shape
        kernels = mask.to(device=weight.device, dtype=torch.bool).reshape(-1, kh * kw)
        kept = kernels.any(1)
        if kept.any():
            library, which = torch.unique(kernels[kept], dim=0, return_inverse=True)
        else:
            library = torch.ones(1, kh * kw, dtype=torch.bool, device=weight.device)
            which = torch.zeros(0, dtype=torch.int64, device=weight.device)
        ids = torch.full((kernels.shape[0],), -1, dtype=torch.int64, device=weight.device)
        ids[kept] = which
        return cls.from_ids(weight, library.reshape(-1, kh, kw), ids.reshape(cout, cin_g),
                            groups)

    @classmethod
    def from_zeros(cls, weight: torch.Tensor, groups: int = 1) -> "Pattern":
        """The pattern format of a weight pruned elsewhere: each kernel's
        non-zero positions are its pattern and an all-zero kernel is dropped,
        so decoding gives ``weight`` back bit for bit. When the kept kernels
        have more than ``MAX_INFERRED_PATTERNS`` distinct masks the zeros are
        no pattern library: only the all-zero kernels are dropped and the
        others kept whole (zeros stored). ``sparsity`` is the fraction of
        weights dropped."""
        check_weight(weight, groups)
        nonzero = weight.detach() != 0
        kernels = nonzero.flatten(2)
        kept = kernels.any(-1)
        if len(torch.unique(kernels[kept], dim=0)) > MAX_INFERRED_PATTERNS:
            nonzero = kept[:, :, None, None].expand(weight.shape)
        return cls.from_mask(weight, nonzero, groups)

    @classmethod
    def pruned(cls, shape: tuple[int, int, int, int], groups: int = 1, device=None,
               dtype=None) -> "Pattern":
        """A fully pruned weight of ``shape`` (no kernel kept; the library is
        the full kernel); works on any device, ``meta`` included."""
        check_geometry(*shape, groups)
        taps = shape[2] * shape[3]
        i32 = dict(dtype=torch.int32, device=device)
        return cls(torch.tensor([0, taps], **i32), torch.arange(taps, **i32),
                   torch.zeros(shape[0] + 1, **i32), torch.zeros(0, **i32),
                   torch.zeros(0, **i32), torch.zeros(0, dtype=dtype, device=device),
                   shape, groups)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, sparsity: float, criterion: str = "l2",
                   groups: int = 1, seed: Optional[int] = None, num_patterns: int = 8,
                   entries: int = 4, require_center: bool = True) -> "Pattern":
        """Pattern + connectivity pruning to overall weight ``sparsity``, as
        the training layer's ``PatternSparsifier`` (one rule, one place: see
        ``pruning.pattern`` for what a level means: up to ``1 - entries/(Kh*Kw)``
        it is the pattern alone, above it kernels are dropped whole).

        ``l2``: PatDNN's library of ``num_patterns`` patterns of ``entries``
        positions by kept energy, each kernel its best, the weakest kernels
        dropped. ``random``: a seeded random library, assignment and drop
        (for benchmarks: the same counts with no magnitude structure).
        """
        check_weight(weight, groups)
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not (
                0.0 <= sparsity <= 1.0):
            raise ValueError(f"sparsity: expected a number in [0, 1], got {sparsity!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
        as_int(num_patterns, "num_patterns", 1)
        as_int(entries, "entries", 1)
        if criterion == "l2":
            _, library, ids = assign_patterns(weight.detach(), sparsity,
                                              num_patterns=num_patterns, entries=entries,
                                              require_center=require_center)
        else:
            library, ids = _random_patterns(weight.shape, sparsity, num_patterns, entries,
                                            require_center, seed)
        return cls.from_ids(weight, library.to(weight.device), ids.to(weight.device), groups)

    # ---- decode ---------------------------------------------------------
    def _value_index(self):
        """(output channel, input channel, tap) of every value."""
        _, value_tap, kernel = _value_layout(self.pattern_ptr, self.pattern_taps,
                                             self.pattern_idx)
        return rows_of(self.row_ptr)[kernel], self.chan_idx.long()[kernel], value_tap.long()

    def to_dense(self) -> torch.Tensor:
        """The dense ``[Cout, Cin/g, Kh, Kw]`` weight (pruned weights are 0)."""
        cout, cin_g, kh, kw = self.shape
        dense = self.values.new_zeros(cout, cin_g, kh * kw)
        dense[self._value_index()] = self.values
        return dense.reshape(self.shape)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The kept weights of a dense weight-shaped tensor, shaped like ``values``."""
        return dense.flatten(2)[self._value_index()]

    def mask(self) -> torch.Tensor:
        """Bool ``[Cout, Cin/g, Kh, Kw]``: True where a weight is kept."""
        cout, cin_g, kh, kw = self.shape
        keep = torch.zeros(cout, cin_g, kh * kw, dtype=torch.bool, device=self.device)
        keep[self._value_index()] = True
        return keep.reshape(self.shape)

    def library(self) -> torch.Tensor:
        """Bool ``[P, Kh, Kw]``: the pattern library."""
        _, _, kh, kw = self.shape
        lib = torch.zeros(self.num_patterns, kh * kw, dtype=torch.bool, device=self.device)
        lib[rows_of(self.pattern_ptr), self.pattern_taps.long()] = True
        return lib.reshape(-1, kh, kw)

    def pattern_id(self) -> torch.Tensor:
        """Int64 ``[Cout, Cin/g]``: each kernel's pattern, ``-1`` where dropped."""
        ids = torch.full(self.shape[:2], -1, dtype=torch.int64, device=self.device)
        ids[rows_of(self.row_ptr), self.chan_idx.long()] = self.pattern_idx.long()
        return ids

    def _build_topology(self) -> PatternTopology:
        i32 = dict(dtype=torch.int32, device=self.device)
        if self.device.type == "meta":  # shapes only
            kernels = torch.empty(self.nnz, **i32)
            derived = (torch.empty(self.nnz + 1, **i32), torch.empty(self.values.numel(), **i32),
                       torch.empty(self.cin_per_group * self.groups + 1, **i32), kernels, kernels)
        else:
            value_ptr, value_tap, _ = _value_layout(self.pattern_ptr, self.pattern_taps,
                                                    self.pattern_idx)
            group = torch.div(rows_of(self.row_ptr), self.cout // self.groups,
                              rounding_mode="floor")
            column = group * self.cin_per_group + self.chan_idx.long()
            derived = (value_ptr, value_tap,
                       *transpose(self.row_ptr, column, self.cin_per_group * self.groups))
        return PatternTopology(*(getattr(self, f).contiguous() for f in self.INDEX_TENSORS),
                               *derived, self.shape, self.groups)

    def __repr__(self) -> str:
        return (f"Pattern(shape={list(self.shape)}, groups={self.groups}, "
                f"patterns={self.num_patterns}, kernels={self.nnz}/{self.num_kernels}, "
                f"sparsity={self.sparsity:.3f}, dtype={self.dtype}, device={self.device})")


def _random_patterns(shape, sparsity: float, num_patterns: int, entries: int,
                     require_center: bool, seed: Optional[int]):
    """A seeded random library (centre kept when asked and the kernel is odd),
    random assignment, and the same number of dropped kernels as ``l2``."""
    cout, cin_g, kh, kw = shape
    area = kh * kw
    kept = min(entries, area)
    gen = torch.Generator().manual_seed(0 if seed is None else seed)
    center = (kh // 2) * kw + kw // 2 if require_center and kh % 2 and kw % 2 else None
    if sparsity == 0 or kept == area:
        library = torch.ones(1, area, dtype=torch.bool)
    else:
        others = [t for t in range(area) if t != center]
        free = kept - (center is not None)
        library = torch.zeros(min(num_patterns, math.comb(len(others), free)), area,
                              dtype=torch.bool)
        seen = set()
        while len(seen) < library.shape[0]:
            pick = tuple(sorted(torch.randperm(len(others), generator=gen)[:free].tolist()))
            if pick not in seen:
                library[len(seen), [others[i] for i in pick]] = True
                seen.add(pick)
        if center is not None:
            library[:, center] = True
    kernels = cout * cin_g
    ids = torch.randint(library.shape[0], (kernels,), generator=gen)
    dropped = dropped_kernel_count(kernels, area, int(library[0].sum()), sparsity) \
        if sparsity else 0
    ids[torch.randperm(kernels, generator=gen)[:dropped]] = -1
    return library.reshape(-1, kh, kw), ids.reshape(cout, cin_g)
