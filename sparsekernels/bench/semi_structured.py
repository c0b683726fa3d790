"""The vendor's own sparse peer: NVIDIA 2:4 sparsity (cuSPARSELt, through
``torch.sparse.to_sparse_semi_structured``) on the conv's im2col GEMM.

A conv is ``W[Cout, Cin*Kh*Kw] @ im2col(x)[Cin*Kh*Kw, B*OH*OW]``; 2:4 keeps
the 2 largest of every 4 consecutive weights along the reduction (50%
sparsity, the only level 2:4 has). cuSPARSELt has no conv, so the peer
materialises im2col (``F.unfold``): two times are recorded, the whole conv
(unfold + GEMM) and the GEMM alone on a precomputed im2col matrix, which
is the 2:4 path's floor and the stricter baseline. Forward only, fp16/bf16
on CUDA (what cuSPARSELt runs); the output stays a permuted view (no copy
is charged to it).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .suites import Layer

DTYPES = (torch.float16, torch.bfloat16)


def runs_on(device: torch.device, dtype: torch.dtype, pass_: str) -> bool:
    """Whether the peer is timed: forward, fp16/bf16, a CUDA GPU of sm_80+."""
    return (pass_ == "forward" and dtype in DTYPES and device.type == "cuda"
            and torch.cuda.get_device_capability(device) >= (8, 0))


def prune_2to4(w: Tensor) -> Tensor:
    """``w`` ``[Cout, Cin, Kh, Kw]`` flattened to ``[Cout, Cin*Kh*Kw]`` with
    the 2 smallest-magnitude entries of every 4 consecutive ones zeroed."""
    w2 = w.reshape(w.shape[0], -1)
    if w2.shape[1] % 4:
        raise ValueError(f"weight: Cin*Kh*Kw = {w2.shape[1]} is not a multiple of 4 (2:4)")
    quads = w2.reshape(w2.shape[0], -1, 4)
    drop = quads.abs().argsort(dim=-1)[..., :2]
    return quads.scatter(-1, drop, 0).reshape_as(w2)


def im2col(layer: Layer, x: Tensor) -> Tensor:
    """``[Cin*Kh*Kw, B*OH*OW]``: the GEMM's dense operand."""
    cols = F.unfold(x, layer.k, padding=layer.padding, stride=layer.stride)  # [B, K, L]
    return cols.transpose(0, 1).reshape(cols.shape[1], -1)


def gemm_to_output(y: Tensor, batch: int, layer: Layer) -> Tensor:
    """``[Cout, B*OH*OW]`` as the conv's ``[B, Cout, OH, OW]`` (a view)."""
    return y.view(y.shape[0], batch, layer.out_hw, layer.out_hw).permute(1, 0, 2, 3)


def peer(layer: Layer, w: Tensor, to_sparse: Callable[[Tensor], Tensor] = None):
    """``(pruned weight [Cout, Cin, Kh, Kw], conv(x), gemm(cols))``: the 2:4
    weight (to check the peer against) and the two timed callables.
    ``to_sparse`` compresses the pruned matrix (cuSPARSELt by default; the
    identity runs the same math densely, for tests without a GPU)."""
    if to_sparse is None:
        from torch.sparse import to_sparse_semi_structured as to_sparse
    pruned = prune_2to4(w.detach())
    a = to_sparse(pruned)

    def conv(x: Tensor) -> Tensor:
        return gemm_to_output(torch.mm(a, im2col(layer, x)), x.shape[0], layer)

    def gemm(cols: Tensor) -> Tensor:
        return torch.mm(a, cols)

    return pruned.view_as(w), conv, gemm
