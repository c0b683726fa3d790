"""The 1xN block-sparse weight format: encode, decode and validate in one place.

A conv weight ``W[Cout, Cin/g, Kh, Kw]`` with ``g`` groups is cut into blocks of
N consecutive output channels of one group x one input channel x the whole
Kh x Kw kernel (Lin et al., "1xN Pattern for Pruning CNNs"). Blocks never cross
a group boundary; when N does not divide ``Cout/g`` the last block row of each
group is padded with zero lanes that no kernel ever writes to the output.

Canonical, serialisable form (block-CSR over block rows):

- ``row_ptr``  int32 ``[g * rows_per_group + 1]``
- ``col_idx``  int32 ``[nnzb]``: input channel within the group, strictly
  increasing within a row
- ``values``   ``[nnzb, Kh, Kw, N]`` with N innermost, so the N outputs that
  share one input patch are contiguous

Every constructor that takes outside data (``from_state_dict``, ``Block1xN(...)``)
runs :meth:`Block1xN.validate`, so an out-of-range index never reaches a kernel.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch

from ..conv_args import as_int
from .base import (
    SparseConvFormat, check_dense_weight, check_geometry, topology_from_op_args, with_geometry,
)
from .csr import check_csr, rows_of, transpose

# Largest block height N the kernels accept (csrc/include/sparsekernels/block1xn.h):
# far above any N used in practice (2..64), small enough that no buffer of N
# lanes can be absurd.
MAX_BLOCK_HEIGHT = 4096

# The N ``from_zeros`` tries, largest first, when it is not given one: the
# block heights 1xN pruning uses (the paper's 2..32) and 1, single kernels,
# which any zero kernel fits.
DETECTED_BLOCK_HEIGHTS = (32, 16, 8, 4, 2, 1)


@with_geometry
class BlockTopology(NamedTuple):
    """A 1xN weight as the kernels take it: its index tensors and geometry.

    ``row_ptr``/``col_idx`` are the block-CSR; ``col_ptr``/``block_idx``/
    ``block_row`` its transpose (per input channel, the blocks that read it),
    used by grad-input. All int32 and on the weight's device. ``shape`` is the
    dense weight's ``[Cout, Cin/g, Kh, Kw]``. In the custom ops it travels as
    ``as_op_args()``: the five tensors and ``meta`` = shape + [N, groups].
    """

    row_ptr: torch.Tensor
    col_idx: torch.Tensor
    col_ptr: torch.Tensor
    block_idx: torch.Tensor
    block_row: torch.Tensor
    shape: tuple[int, int, int, int]
    n: int
    groups: int

    TENSORS = ("row_ptr", "col_idx", "col_ptr", "block_idx", "block_row")
    INDEX_TENSORS = ("row_ptr", "col_idx")  # saved; the others derive from them

    @property
    def rows_per_group(self) -> int:
        return rows_per_group(self.cout, self.groups, self.n)

    @property
    def nnzb(self) -> int:
        return self.col_idx.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of the weight's blocks that are pruned."""
        return 1.0 - self.nnzb / (self.groups * self.rows_per_group * self.shape[1])

    @property
    def values_shape(self) -> tuple[tuple[int, ...], str]:
        return (self.nnzb, *self.kernel_size, self.n), "[nnzb, Kh, Kw, N]"

    def to_format(self, values: torch.Tensor) -> "Block1xN":
        """The (validated) format of this topology with ``values``."""
        return Block1xN(self.row_ptr, self.col_idx, values, self.shape, self.n, self.groups)

    def as_op_args(self) -> tuple[list[torch.Tensor], list[int]]:
        return [getattr(self, f) for f in self.TENSORS], [*self.shape, self.n, self.groups]

    @classmethod
    def from_op_args(cls, tensors, meta) -> "BlockTopology":
        return topology_from_op_args(cls, Block1xN, tensors, meta, check=_check_geometry)

CRITERIA = ("l1", "random")


def _check_geometry(cout: int, cin_per_group: int, kh: int, kw: int, n: int, groups: int):
    as_int(n, "n", 1, MAX_BLOCK_HEIGHT)
    check_geometry(cout, cin_per_group, kh, kw, groups)


def rows_per_group(cout: int, groups: int, n: int) -> int:
    """Block rows per group: ceil((Cout/g) / N), the last one possibly padded."""
    return -(-(cout // groups) // n)


def _to_blocks(t: torch.Tensor, groups: int, n: int, fill) -> torch.Tensor:
    """[Cout, Cin/g, Kh, Kw] -> [g*rows, Cin/g, Kh, Kw, N], padded lanes = fill."""
    cout, cin_g, kh, kw = t.shape
    cout_g = cout // groups
    rows = rows_per_group(cout, groups, n)
    t = t.reshape(groups, cout_g, cin_g, kh, kw)
    pad = rows * n - cout_g
    if pad:
        t = torch.cat([t, t.new_full((groups, pad, cin_g, kh, kw), fill)], dim=1)
    t = t.reshape(groups, rows, n, cin_g, kh, kw).permute(0, 1, 3, 4, 5, 2)
    return t.reshape(groups * rows, cin_g, kh, kw, n)


def _from_blocks(b: torch.Tensor, cout: int, groups: int) -> torch.Tensor:
    """Inverse of :func:`_to_blocks` (padded lanes dropped)."""
    total_rows, cin_g, kh, kw, n = b.shape
    rows = total_rows // groups
    t = b.reshape(groups, rows, cin_g, kh, kw, n).permute(0, 1, 5, 2, 3, 4)
    t = t.reshape(groups, rows * n, cin_g, kh, kw)[:, : cout // groups]
    return t.reshape(cout, cin_g, kh, kw)


def _in_zero_blocks(zero: torch.Tensor, groups: int, n: int) -> torch.Tensor:
    """Bool, shaped like the weight whose ``zero`` (== 0) it is given: True
    where a weight lies in a 1xN block whose weights are all zero."""
    blocks = _to_blocks(zero, groups, n, True).flatten(2).all(-1)  # padded lanes count as zero
    kh, kw = zero.shape[2:]
    lanes = blocks[:, :, None, None, None].expand(-1, -1, kh, kw, n)
    return _from_blocks(lanes, zero.shape[0], groups)


def decode(values: torch.Tensor, row_ptr, col_idx, cout: int, cin_per_group: int, groups: int) -> torch.Tensor:
    """Dense ``[Cout, Cin/g, Kh, Kw]`` from block values (pruned blocks are 0)."""
    _, kh, kw, n = values.shape
    b = values.new_zeros(row_ptr.numel() - 1, cin_per_group, kh, kw, n)
    b[rows_of(row_ptr), col_idx.long()] = values
    return _from_blocks(b, cout, groups)


def gather(dense: torch.Tensor, row_ptr, col_idx, n: int, groups: int) -> torch.Tensor:
    """``[nnzb, Kh, Kw, N]``: the kept blocks of a dense weight-shaped tensor
    (padded lanes 0). The inverse of decode on the kept positions."""
    return _to_blocks(dense, groups, n, 0.0)[rows_of(row_ptr), col_idx.long()]


class Block1xN(SparseConvFormat):
    """A 1xN block-sparse conv weight in block-CSR form.

    Build it with :meth:`from_dense` (by criterion) or :meth:`from_mask`;
    ``Block1xN(row_ptr, col_idx, values, shape, n, groups)`` takes the raw
    arrays and validates them.
    """

    INDEX_TENSORS = ("row_ptr", "col_idx")
    PARAMS = ("n",)
    CRITERIA = CRITERIA
    Topology = BlockTopology

    def __init__(
        self,
        row_ptr: torch.Tensor,
        col_idx: torch.Tensor,
        values: torch.Tensor,
        shape: tuple[int, int, int, int],
        n: int,
        groups: int = 1,
    ):
        self.row_ptr = row_ptr
        self.col_idx = col_idx
        self.values = values
        self.shape = tuple(as_int(s, "shape", 1) for s in shape)
        self.n = n
        self.groups = groups
        self._topology: Optional[BlockTopology] = None
        self.validate()

    # ---- geometry -------------------------------------------------------
    @property
    def rows_per_group(self) -> int:
        return rows_per_group(self.cout, self.groups, self.n)

    @property
    def num_rows(self) -> int:
        return self.groups * self.rows_per_group

    @property
    def nnzb(self) -> int:
        return self.col_idx.numel()

    @property
    def num_blocks(self) -> int:
        """Blocks a dense weight of this shape has (kept or not)."""
        return self.num_rows * self.cin_per_group

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nnzb / self.num_blocks

    # ---- validation -----------------------------------------------------
    def validate(self) -> "Block1xN":
        """Check every invariant a kernel relies on; raise naming the field."""
        as_int(self.n, "n", 1, MAX_BLOCK_HEIGHT)
        cout, cin_g, kh, kw = self._validate_geometry_and_dtypes()
        v = self.values
        nnzb = self.col_idx.numel()
        if tuple(v.shape) != (nnzb, kh, kw, self.n):
            raise ValueError(
                f"values: expected shape [nnzb={nnzb}, Kh={kh}, Kw={kw}, N={self.n}], "
                f"got {list(v.shape)}"
            )
        check_csr(self.row_ptr, self.col_idx, self.num_rows, cin_g,
                  cols_meaning="input channels per group")
        return self

    # ---- encode ---------------------------------------------------------
    @classmethod
    def from_mask(
        cls, weight: torch.Tensor, mask: torch.Tensor, n: int, groups: int = 1
    ) -> "Block1xN":
        """Keep the blocks ``mask`` keeps; reject a mask that is not 1xN."""
        check_dense_weight(weight)
        _check_geometry(*weight.shape, n, groups)
        if not isinstance(mask, torch.Tensor) or tuple(mask.shape) != tuple(weight.shape):
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"mask: expected shape {tuple(weight.shape)}, got {got}")
        m = mask.to(device=weight.device, dtype=torch.bool)
        any_kept = _to_blocks(m, groups, n, False).flatten(2).any(-1)
        all_kept = _to_blocks(m, groups, n, True).flatten(2).all(-1)
        partial = any_kept != all_kept
        if partial.any():
            r, c = (int(i) for i in torch.nonzero(partial)[0])
            rows = rows_per_group(weight.shape[0], groups, n)
            g, q = divmod(r, rows)
            o0 = g * (weight.shape[0] // groups) + q * n
            o1 = min(o0 + n, (g + 1) * (weight.shape[0] // groups))
            raise ValueError(
                f"mask: not 1x{n} structured: block (group {g}, output channels "
                f"{o0}..{o1 - 1}, input channel {c}) is partly kept"
            )
        return cls._from_block_mask(weight, any_kept, n, groups)

    @classmethod
    def from_zeros(cls, weight: torch.Tensor, groups: int = 1, n: Optional[int] = None,
                   pad_partial: bool = True) -> "Block1xN":
        """The 1xN format of a weight pruned elsewhere: a block is pruned iff
        all its weights are exactly zero; every other weight is kept as stored
        (zeros included), so decoding gives ``weight`` back bit for bit.
        ``sparsity`` is then the fraction of blocks entirely zero.

        ``n=None`` detects N: the largest of ``DETECTED_BLOCK_HEIGHTS`` (at
        most ``Cout/g``, and dividing it unless ``pad_partial``) whose
        all-zero blocks hold every all-zero kernel, i.e. whose block-zero
        fraction is the kernel-level (N=1) one. Counting kernels rather than
        blocks keeps a padded last block row from skewing the comparison.
        """
        check_dense_weight(weight)
        check_geometry(*weight.shape, groups)
        zero = weight.detach() == 0
        if n is None:
            cout_g = weight.shape[0] // groups
            zero_kernels = _in_zero_blocks(zero, groups, 1)
            n = next(h for h in DETECTED_BLOCK_HEIGHTS
                     if h <= cout_g and (pad_partial or cout_g % h == 0)
                     and torch.equal(_in_zero_blocks(zero, groups, h), zero_kernels))
        _check_geometry(*weight.shape, n, groups)
        return cls.from_mask(weight, ~_in_zero_blocks(zero, groups, n), n, groups)

    @classmethod
    def pruned(
        cls, shape: tuple[int, int, int, int], n: int, groups: int = 1, device=None, dtype=None
    ) -> "Block1xN":
        """A fully pruned weight of ``shape`` (no blocks kept); works on any
        device, ``meta`` included, since it reads no data."""
        _check_geometry(*shape, n, groups)
        rows = groups * rows_per_group(shape[0], groups, n)
        return cls(
            torch.zeros(rows + 1, dtype=torch.int32, device=device),
            torch.zeros(0, dtype=torch.int32, device=device),
            torch.zeros(0, shape[2], shape[3], n, dtype=dtype, device=device),
            shape, n, groups,
        )

    @classmethod
    def from_dense(
        cls,
        weight: torch.Tensor,
        n: int,
        sparsity: float,
        criterion: str = "l1",
        groups: int = 1,
        seed: Optional[int] = None,
    ) -> "Block1xN":
        """Prune ``round(sparsity * num_blocks)`` blocks of one layer.

        ``l1``: lowest block sum of |w| first (ties by position). A padded
        last row has fewer than N real lanes; its sum is scaled by N/lanes so
        short rows are not pruned first merely for being short.
        ``random``: a uniform sample without replacement (seeded).
        """
        check_dense_weight(weight)
        _check_geometry(*weight.shape, n, groups)
        if not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity: expected a number in [0, 1], got {sparsity!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion: expected one of {CRITERIA}, got {criterion!r}")
        blocks = _to_blocks(weight.detach(), groups, n, 0.0)
        num_blocks = blocks.shape[0] * blocks.shape[1]
        num_pruned = int(math.floor(sparsity * num_blocks + 0.5))
        if criterion == "l1":
            score = blocks.abs().double().flatten(2).sum(-1) * _lane_scale(weight, groups, n)
            score = score.flatten().cpu()
            order = torch.argsort(score, stable=True)
        else:
            gen = torch.Generator().manual_seed(0 if seed is None else seed)
            order = torch.randperm(num_blocks, generator=gen)
        keep = torch.ones(num_blocks, dtype=torch.bool)
        keep[order[:num_pruned]] = False
        keep = keep.reshape(blocks.shape[:2]).to(weight.device)
        return cls._from_block_mask(weight, keep, n, groups, blocks)

    @classmethod
    def _from_block_mask(
        cls, weight: torch.Tensor, keep: torch.Tensor, n: int, groups: int,
        blocks: Optional[torch.Tensor] = None,
    ) -> "Block1xN":
        if blocks is None:
            blocks = _to_blocks(weight.detach(), groups, n, 0.0)
        rows, cols = torch.nonzero(keep, as_tuple=True)  # row-major: sorted by row, col
        counts = torch.bincount(rows, minlength=keep.shape[0])
        row_ptr = torch.zeros(keep.shape[0] + 1, dtype=torch.int64, device=weight.device)
        row_ptr[1:] = torch.cumsum(counts, 0)
        return cls(
            row_ptr.to(torch.int32),
            cols.to(torch.int32),
            blocks[rows, cols].contiguous(),
            tuple(weight.shape),
            n,
            groups,
        )

    # ---- decode ---------------------------------------------------------
    def to_dense(self) -> torch.Tensor:
        """The dense ``[Cout, Cin/g, Kh, Kw]`` weight (pruned blocks are 0)."""
        return decode(self.values, self.row_ptr, self.col_idx, self.cout, self.cin_per_group, self.groups)

    def gather(self, dense: torch.Tensor) -> torch.Tensor:
        """The kept entries of a dense weight-shaped tensor, shaped like
        ``values`` (padded lanes 0): e.g. a dense weight gradient."""
        return gather(dense, self.row_ptr, self.col_idx, self.n, self.groups)

    def mask(self) -> torch.Tensor:
        """Bool ``[Cout, Cin/g, Kh, Kw]``: True where a weight is kept."""
        ones = torch.ones_like(self.values, dtype=torch.bool)
        return decode(ones, self.row_ptr, self.col_idx, self.cout, self.cin_per_group, self.groups)

    def _build_topology(self) -> BlockTopology:
        if self.device.type == "meta":  # shapes only
            index = torch.empty(self.nnzb, dtype=torch.int32, device=self.device)
            cols = torch.empty(self.groups * self.cin_per_group + 1, dtype=torch.int32,
                               device=self.device)
            transposed = (cols, index, index)
        else:  # per absolute input channel, the blocks that read it
            group = torch.div(rows_of(self.row_ptr), self.rows_per_group, rounding_mode="floor")
            column = group * self.cin_per_group + self.col_idx.long()
            transposed = transpose(self.row_ptr, column, self.groups * self.cin_per_group)
        return BlockTopology(self.row_ptr.contiguous(), self.col_idx.contiguous(), *transposed,
                             self.shape, self.n, self.groups)

    def __repr__(self) -> str:
        return (
            f"Block1xN(shape={list(self.shape)}, n={self.n}, groups={self.groups}, "
            f"nnzb={self.nnzb}/{self.num_blocks}, sparsity={self.sparsity:.3f}, "
            f"dtype={self.dtype}, device={self.device})"
        )


def _lane_scale(weight: torch.Tensor, groups: int, n: int) -> torch.Tensor:
    """[rows, 1]: N / real lanes of each block row (1 except a padded row)."""
    ones = torch.ones(weight.shape[0], 1, 1, 1, dtype=torch.float64, device=weight.device)
    lanes = _to_blocks(ones, groups, n, 0.0).sum(-1).flatten(1)
    return n / lanes
