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

# Largest block height N the kernels accept (csrc/include/sparsekernels/block1xn.h):
# far above any N used in practice (2..64), small enough that no buffer of N
# lanes can be absurd.
MAX_BLOCK_HEIGHT = 4096


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

    @property
    def cout(self) -> int:
        return self.shape[0]

    @property
    def cin(self) -> int:
        return self.shape[1] * self.groups

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

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

    def as_op_args(self) -> tuple[list[torch.Tensor], list[int]]:
        return [getattr(self, f) for f in self.TENSORS], [*self.shape, self.n, self.groups]

    @classmethod
    def from_op_args(cls, tensors, meta) -> "BlockTopology":
        """Rebuild from a custom op's arguments, bounding every integer (the
        tensors' contents are checked before any kernel, see ops/block1xn_checks)."""
        if len(tensors) != 5:
            raise ValueError("topology: expected 5 tensors (row_ptr, col_idx, col_ptr, "
                             f"block_idx, block_row), got {len(tensors)}")
        if len(meta) != len(_META_KEYS):
            raise ValueError(f"meta: expected {len(_META_KEYS)} ints {_META_KEYS}, got {len(meta)}")
        cout, cin_g, kh, kw, n, groups = meta
        _check_geometry(cout, cin_g, kh, kw, n, groups)
        return cls(*tensors, (cout, cin_g, kh, kw), n, groups)


CRITERIA = ("l1", "random")
_META_KEYS = ("cout", "cin_per_group", "kh", "kw", "n", "groups")


def _check_geometry(cout: int, cin_per_group: int, kh: int, kw: int, n: int, groups: int):
    as_int(n, "n", 1, MAX_BLOCK_HEIGHT)
    as_int(groups, "groups", 1)
    for name, size in (("out_channels", cout), ("in_channels/groups", cin_per_group),
                       ("kernel height", kh), ("kernel width", kw)):
        as_int(size, f"weight shape: {name}", 1)
    if cout % groups != 0:
        raise ValueError(f"groups: {groups} does not divide out_channels={cout}")


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


def block_rows(row_ptr: torch.Tensor) -> torch.Tensor:
    """The block row of every kept block, from the CSR offsets."""
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=row_ptr.device), counts)


def decode(values: torch.Tensor, row_ptr, col_idx, cout: int, cin_per_group: int, groups: int) -> torch.Tensor:
    """Dense ``[Cout, Cin/g, Kh, Kw]`` from block values (pruned blocks are 0)."""
    _, kh, kw, n = values.shape
    b = values.new_zeros(row_ptr.numel() - 1, cin_per_group, kh, kw, n)
    b[block_rows(row_ptr), col_idx.long()] = values
    return _from_blocks(b, cout, groups)


def gather(dense: torch.Tensor, row_ptr, col_idx, n: int, groups: int) -> torch.Tensor:
    """``[nnzb, Kh, Kw, N]``: the kept blocks of a dense weight-shaped tensor
    (padded lanes 0). The inverse of decode on the kept positions."""
    return _to_blocks(dense, groups, n, 0.0)[block_rows(row_ptr), col_idx.long()]


class Block1xN:
    """A 1xN block-sparse conv weight in block-CSR form.

    Build it with :meth:`from_dense` (by criterion) or :meth:`from_mask`;
    ``Block1xN(row_ptr, col_idx, values, shape, n, groups)`` takes the raw
    arrays and validates them.
    """

    # What a module saves (besides values) and the kernels' view of it.
    INDEX_TENSORS = ("row_ptr", "col_idx")
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
    def cout(self) -> int:
        return self.shape[0]

    @property
    def cin_per_group(self) -> int:
        return self.shape[1]

    @property
    def kernel_size(self) -> tuple[int, int]:
        return self.shape[2], self.shape[3]

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

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    # ---- validation -----------------------------------------------------
    def validate(self) -> "Block1xN":
        """Check every invariant a kernel relies on; raise naming the field."""
        if len(self.shape) != 4:
            raise ValueError(f"shape: expected [Cout, Cin/g, Kh, Kw], got {self.shape}")
        cout, cin_g, kh, kw = self.shape
        _check_geometry(cout, cin_g, kh, kw, self.n, self.groups)
        for name in ("row_ptr", "col_idx", "values"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise TypeError(f"{name}: expected a torch.Tensor")
        rp, ci, v = self.row_ptr, self.col_idx, self.values
        for name, t in (("row_ptr", rp), ("col_idx", ci)):
            if t.dtype != torch.int32:
                raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
            if t.dim() != 1:
                raise ValueError(f"{name}: expected a 1-D tensor, got shape {tuple(t.shape)}")
        if not v.is_floating_point():
            raise TypeError(f"values: expected a floating dtype, got {v.dtype}")
        if rp.device != v.device or ci.device != v.device:
            raise ValueError(
                f"row_ptr/col_idx/values: expected one device, got "
                f"{rp.device}/{ci.device}/{v.device}"
            )
        if rp.numel() != self.num_rows + 1:
            raise ValueError(
                f"row_ptr: expected {self.num_rows + 1} entries (groups*ceil(Cout/g/N)+1), "
                f"got {rp.numel()}"
            )
        nnzb = ci.numel()
        if tuple(v.shape) != (nnzb, kh, kw, self.n):
            raise ValueError(
                f"values: expected shape [nnzb={nnzb}, Kh={kh}, Kw={kw}, N={self.n}], "
                f"got {list(v.shape)}"
            )
        if v.device.type == "meta":
            return self  # shapes only: no index data to check, and no kernel runs on meta
        rp64, ci64 = rp.long().cpu(), ci.long().cpu()
        if rp64[0] != 0:
            raise ValueError(f"row_ptr: must start at 0, starts at {int(rp64[0])}")
        if rp64[-1] != nnzb:
            raise ValueError(f"row_ptr: must end at nnzb={nnzb}, ends at {int(rp64[-1])}")
        steps = rp64[1:] - rp64[:-1]
        if (steps < 0).any():
            r = int(torch.nonzero(steps < 0)[0])
            raise ValueError(f"row_ptr: decreases at row {r}")
        if nnzb:
            if ci64.min() < 0 or ci64.max() >= cin_g:
                bad = int(torch.nonzero((ci64 < 0) | (ci64 >= cin_g))[0])
                raise ValueError(
                    f"col_idx: entry {bad} = {int(ci64[bad])} is out of range "
                    f"[0, {cin_g}) (input channels per group)"
                )
            row_of = torch.repeat_interleave(torch.arange(self.num_rows), steps)
            same_row = row_of[1:] == row_of[:-1]
            bad = same_row & (ci64[1:] <= ci64[:-1])
            if bad.any():
                i = int(torch.nonzero(bad)[0]) + 1
                raise ValueError(
                    f"col_idx: not strictly increasing within row {int(row_of[i])} "
                    f"(entry {i} = {int(ci64[i])} after {int(ci64[i - 1])})"
                )
        return self

    # ---- encode ---------------------------------------------------------
    @classmethod
    def from_mask(
        cls, weight: torch.Tensor, mask: torch.Tensor, n: int, groups: int = 1
    ) -> "Block1xN":
        """Keep the blocks ``mask`` keeps; reject a mask that is not 1xN."""
        _check_weight(weight, groups)
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
        _check_weight(weight, groups)
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

    def mask(self) -> torch.Tensor:
        """Bool ``[Cout, Cin/g, Kh, Kw]``: True where a weight is kept."""
        ones = torch.ones_like(self.values, dtype=torch.bool)
        return decode(ones, self.row_ptr, self.col_idx, self.cout, self.cin_per_group, self.groups)

    def topology(self) -> BlockTopology:
        """Index tensors the kernels take, with the transposed (per input
        channel) view that grad-input needs. Cached: the topology is fixed."""
        if self._topology is None:
            self._topology = BlockTopology(
                self.row_ptr.contiguous(), self.col_idx.contiguous(), *self._transposed(),
                self.shape, self.n, self.groups,
            )
        return self._topology

    def _transposed(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(col_ptr, block_idx, block_row): per absolute input channel, the
        blocks that read it, in row order."""
        cols = self.groups * self.cin_per_group
        if self.device.type == "meta":  # shapes only
            index = torch.empty(self.nnzb, dtype=torch.int32, device=self.device)
            return torch.empty(cols + 1, dtype=torch.int32, device=self.device), index, index
        rows = block_rows(self.row_ptr)
        group = torch.div(rows, self.rows_per_group, rounding_mode="floor")
        abs_col = group * self.cin_per_group + self.col_idx.long()
        order = torch.argsort(abs_col, stable=True)  # stable keeps rows ascending
        col_ptr = torch.zeros(cols + 1, dtype=torch.int64, device=self.device)
        col_ptr[1:] = torch.cumsum(torch.bincount(abs_col, minlength=cols), 0)
        return col_ptr.to(torch.int32), order.to(torch.int32), rows[order].to(torch.int32)

    # ---- movement and serialisation -------------------------------------
    def to(self, device=None, dtype=None) -> "Block1xN":
        """A copy on ``device`` with values in ``dtype`` (indices stay int32)."""
        if dtype is not None and not dtype.is_floating_point:
            raise TypeError(f"dtype: expected a floating dtype, got {dtype}")
        out = Block1xN.__new__(Block1xN)
        out.row_ptr = self.row_ptr.to(device=device)
        out.col_idx = self.col_idx.to(device=device)
        out.values = self.values.to(device=device, dtype=dtype)
        out.shape, out.n, out.groups, out._topology = self.shape, self.n, self.groups, None
        return out

    def params(self) -> dict[str, int]:
        """The kind's own parameters (what ``pruned`` and the module take)."""
        return {"n": self.n}

    def meta(self) -> list[int]:
        """``[Cout, Cin/g, Kh, Kw, N, groups]``: the integers of ``state_dict``
        and of the custom ops."""
        return [*self.shape, self.n, self.groups]

    def state_dict(self) -> dict[str, torch.Tensor]:
        meta = torch.tensor(self.meta(), dtype=torch.int64)
        return {"row_ptr": self.row_ptr, "col_idx": self.col_idx, "values": self.values, "meta": meta}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Block1xN":
        """Rebuild (and validate) a format saved with :meth:`state_dict`."""
        missing = [k for k in ("row_ptr", "col_idx", "values", "meta") if k not in state]
        if missing:
            raise ValueError(f"state_dict: missing keys {missing}")
        meta = state["meta"]
        if not isinstance(meta, torch.Tensor) or meta.numel() != len(_META_KEYS):
            raise ValueError(f"meta: expected {len(_META_KEYS)} ints {_META_KEYS}")
        cout, cin_g, kh, kw, n, groups = meta.tolist()
        return cls(state["row_ptr"], state["col_idx"], state["values"], (cout, cin_g, kh, kw), n, groups)

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


def _check_weight(weight: torch.Tensor, groups: int):
    if not isinstance(weight, torch.Tensor):
        raise TypeError(f"weight: expected a torch.Tensor, got {type(weight).__name__}")
    if weight.dim() != 4:
        raise ValueError(f"weight: expected 4-D [Cout, Cin/g, Kh, Kw], got shape {tuple(weight.shape)}")
    if not weight.is_floating_point():
        raise TypeError(f"weight: expected a floating dtype, got {weight.dtype}")
