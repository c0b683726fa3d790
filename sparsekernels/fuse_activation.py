"""``fuse_activations(model)``: the ReLU / ReLU6 after a sparse conv (or a
``DepthwiseConv2d``) run in the conv's epilogue (inference).

A ReLU module reads and writes every activation once more; a conv whose
``activation`` is set clamps its output in registers before the store
instead (``sparsekernels.activation``). Which activations fuse is read off the
model's graph (``torch.fx``, the library's convs kept as leaves, as
``fold_batchnorm`` reads it): a ``nn.ReLU`` / ``nn.ReLU6`` module, or
``F.relu`` / ``torch.relu`` / ``F.relu6``, called on the output of such a
conv that nothing else reads and that is called once. ``nn.Identity`` calls
(a folded BatchNorm) in between are dropped from the graph first. An
activation module shared between several calls (torchvision's ResNet blocks
use one ReLU three times) fuses where its input is such a conv and stays a
call everywhere else: that is why the result is a new graph.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Optional

from torch import fx, nn

from .activation import ACTIVATIONS, FusedActivation
from .fold_bn import ConvLeafTracer

log = logging.getLogger("sparsekernels")


def _activation_of(node: fx.Node, modules: dict) -> Optional[str]:
    """The key of ``ACTIVATIONS`` that ``node`` calls on its one input, or None."""
    if node.op == "call_module":
        if len(node.args) != 1 or node.kwargs:
            return None
        kind = type(modules[node.target])
        return next((k for k, a in ACTIVATIONS.items() if kind is a.module), None)
    if node.op == "call_function" and node.args:
        # F.relu(x, inplace): in place or not, the conv's output has no other reader.
        if any(not isinstance(a, bool) for a in node.args[1:]) or set(node.kwargs) - {"inplace"}:
            return None
        return next((k for k, a in ACTIVATIONS.items() if node.target in a.functions), None)
    return None


def _drop_identities(graph: fx.Graph, modules: dict) -> None:
    for node in list(graph.nodes):
        if (node.op == "call_module" and type(modules[node.target]) is nn.Identity
                and len(node.args) == 1 and not node.kwargs):
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)


def fuse_activations(model: nn.Module) -> fx.GraphModule:
    """A ``torch.fx.GraphModule`` computing what ``model`` computes, with every
    ReLU / ReLU6 that directly follows a sparse conv or a ``DepthwiseConv2d``
    (whose output nothing else reads) moved into that conv's ``activation``. The graph module
    shares ``model``'s submodules, so the fused convs change in ``model``
    too, where they still compute the same (the activation then runs twice:
    ReLU and ReLU6 are idempotent). For inference; run ``fold_batchnorm``
    first, so that a BatchNorm between the conv and its activation is gone."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    try:
        graph = ConvLeafTracer().trace(model)
    except Exception as exc:  # fx raises many types for untraceable code
        raise TypeError(f"model: fuse_activations reads the model's graph with torch.fx, "
                        f"which cannot trace it ({type(exc).__name__}: {exc})") from exc
    modules = dict(model.named_modules())
    _drop_identities(graph, modules)
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    fused = 0
    for node in list(graph.nodes):
        name = _activation_of(node, modules)
        src = node.args[0] if name else None
        if not (isinstance(src, fx.Node) and src.op == "call_module"):
            continue
        conv = modules[src.target]
        if (isinstance(conv, FusedActivation) and conv.activation is None
                and len(src.users) == 1 and calls[src.target] == 1):
            conv.activation = name
            node.replace_all_uses_with(src)
            graph.erase_node(node)
            fused += 1
    graph.lint()
    fused_model = fx.GraphModule(model, graph, class_name=type(model).__name__)
    fused_model.delete_all_unused_submodules()
    log.info("fuse_activations: fused %d activations into the conv before each", fused)
    return fused_model
