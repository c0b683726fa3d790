"""Compressed-sparse-row index checks and transposition, for every kind whose
topology is a CSR (1xN: block rows x input channels; stripe: output channels
x kernel positions; ...). Messages name the field as the kinds call it."""
from __future__ import annotations

import torch


def check_index_tensor(name: str, t, device: torch.device):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if t.dtype != torch.int32:
        raise TypeError(f"{name}: expected dtype torch.int32, got {t.dtype}")
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D tensor, got shape {tuple(t.shape)}")
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")


def check_csr(row_ptr: torch.Tensor, col_idx: torch.Tensor, num_rows: int, num_cols: int,
              names: tuple[str, str] = ("row_ptr", "col_idx"), cols_meaning: str = "columns"):
    """Raise unless ``row_ptr`` runs from 0 to ``len(col_idx)`` over
    ``num_rows`` rows without decreasing and every row's ``col_idx`` is
    strictly increasing in ``[0, num_cols)``. Reads the data (meta tensors,
    which have none, pass on their shapes alone)."""
    rp_name, ci_name = names
    if row_ptr.numel() != num_rows + 1:
        raise ValueError(f"{rp_name}: expected {num_rows + 1} entries (rows + 1), "
                         f"got {row_ptr.numel()}")
    if row_ptr.device.type == "meta":
        return
    nnz = col_idx.numel()
    rp, ci = row_ptr.long().cpu(), col_idx.long().cpu()
    if rp[0] != 0:
        raise ValueError(f"{rp_name}: must start at 0, starts at {int(rp[0])}")
    if rp[-1] != nnz:
        raise ValueError(f"{rp_name}: must end at nnz={nnz}, ends at {int(rp[-1])}")
    steps = rp[1:] - rp[:-1]
    if (steps < 0).any():
        raise ValueError(f"{rp_name}: decreases at row {int(torch.nonzero(steps < 0)[0])}")
    if not nnz:
        return
    if ci.min() < 0 or ci.max() >= num_cols:
        bad = int(torch.nonzero((ci < 0) | (ci >= num_cols))[0])
        raise ValueError(f"{ci_name}: entry {bad} = {int(ci[bad])} is out of range "
                         f"[0, {num_cols}) ({cols_meaning})")
    row_of = rows_of(rp)
    bad = (row_of[1:] == row_of[:-1]) & (ci[1:] <= ci[:-1])
    if bad.any():
        i = int(torch.nonzero(bad)[0]) + 1
        raise ValueError(f"{ci_name}: not strictly increasing within row {int(row_of[i])} "
                         f"(entry {i} = {int(ci[i])} after {int(ci[i - 1])})")


def rows_of(row_ptr: torch.Tensor) -> torch.Tensor:
    """The row of every entry, from the CSR offsets."""
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=row_ptr.device), counts)


def transpose(row_ptr: torch.Tensor, column: torch.Tensor, num_cols: int):
    """The CSC view of a CSR whose entry ``j`` sits in column ``column[j]``:
    ``(col_ptr, entry, entry_row)``, entries of a column in row order (int32)."""
    rows = rows_of(row_ptr)
    order = torch.argsort(column, stable=True)  # stable keeps rows ascending
    col_ptr = torch.zeros(num_cols + 1, dtype=torch.int64, device=row_ptr.device)
    col_ptr[1:] = torch.cumsum(torch.bincount(column, minlength=num_cols), 0)
    return col_ptr.to(torch.int32), order.to(torch.int32), rows[order].to(torch.int32)
