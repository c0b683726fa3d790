"""``fold_batchnorm(model)``: eval-mode BatchNorm folded into the conv before it.

For inference a ``BatchNorm2d`` that only ever sees one conv's output is an
affine map per output channel, ``y = s * conv(x) + t`` with
``s = gamma / sqrt(running_var + eps)`` and ``t = beta - s * running_mean``:
the conv's weight scaled by ``s`` per output channel and its bias
``s * b + t`` compute the same thing with one pass over the activations
fewer. ONNX Runtime and ``torch.compile`` fold it into dense convs; this does
the same for sparse ones (every kind: the scaled weight goes back through the
format's ``gather``, so the sparsity structure is unchanged; pruned weights
stay zero) and for plain ``nn.Conv2d``. The products are formed in float64 and
rounded once.

Which BNs fold is read off the model's graph (``torch.fx``, sparse convs kept
as leaves): a ``BatchNorm2d`` called on the output of a conv that nothing else
reads, each module called once. A BN in training mode, without running
statistics, after a conv whose output is also used elsewhere, or shared
stays as it is.
"""
from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import fx, nn

from .activation import FusedActivation
from .nn.base import SparseConv2d
from .nn.nchw_kernels import MaxPool2d
from .nn.replace import replace_module

log = logging.getLogger("sparsekernels")

_CONVS = (nn.Conv2d, SparseConv2d)


class LibraryLeafTracer(fx.Tracer):
    """Keeps the library's modules (they run Python checks a proxy cannot:
    the sparse convs and the NCHW-kernel ones) and every torch.nn module leaves."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, (FusedActivation, MaxPool2d)) or super().is_leaf_module(m, qualname)


def _foldable(bn: nn.Module) -> bool:
    return (type(bn) is nn.BatchNorm2d and not bn.training and bn.track_running_stats
            and bn.running_mean is not None and bn.running_var is not None)


def library_graph(model: nn.Module, reader: str) -> fx.Graph:
    """``model``'s graph, the library's modules as leaves; a model torch.fx
    cannot trace is a TypeError naming ``reader``, the function that wanted it."""
    try:
        return LibraryLeafTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise TypeError(f"model: {reader} reads the model's graph with torch.fx, "
                        f"which cannot trace it ({type(exc).__name__}: {exc})") from exc


def _pairs(model: nn.Module) -> list[tuple[str, str]]:
    """(conv name, BN name) for every BN applied to a conv's sole use."""
    graph = library_graph(model, "fold_batchnorm")
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or not _foldable(modules[node.target]):
            continue
        src = node.args[0] if node.args else None
        if (isinstance(src, fx.Node) and src.op == "call_module"
                and isinstance(modules[src.target], _CONVS) and len(src.users) == 1
                and len(node.args) == 1 and not node.kwargs
                and calls[src.target] == 1 and calls[node.target] == 1):  # not shared
            pairs.append((src.target, node.target))
    return pairs


def _scale_and_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    var, mean = bn.running_var.double(), bn.running_mean.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double()
    shift = -mean * scale + (bn.bias.detach().double() if bn.affine else 0)
    return scale, shift


@torch.no_grad()
def _fold(conv: nn.Module, bn: nn.BatchNorm2d) -> None:
    scale, shift = _scale_and_shift(bn)
    if conv.out_channels != scale.numel():
        raise ValueError(f"BatchNorm of {scale.numel()} channels after a conv of "
                         f"{conv.out_channels}")
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    if isinstance(conv, SparseConv2d):
        fmt = conv.format()
        dense = fmt.to_dense().double() * scale.view(-1, 1, 1, 1)
        values = fmt.gather(dense.to(fmt.values.device))
        conv.values.copy_(values.to(conv.values.dtype))
        like = conv.values
    else:
        conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
        like = conv.weight
    conv.bias = nn.Parameter(bias.to(like.device, like.dtype), requires_grad=like.requires_grad)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a conv (sparse
    or dense) whose output nothing else reads into that conv, and replace it
    by ``nn.Identity``, in place; returns ``model``. Call it on a model in
    ``eval()`` mode, for inference only: a folded model cannot be trained as
    the original (its BN statistics are gone)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    pairs = _pairs(model)
    modules = dict(model.named_modules())
    for conv_name, bn_name in pairs:
        _fold(modules[conv_name], modules[bn_name])
        replace_module(model, bn_name, nn.Identity())
    log.info("fold_batchnorm: folded %d BatchNorm2d into the conv before each", len(pairs))
    return model
