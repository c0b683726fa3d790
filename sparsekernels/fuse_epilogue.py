"""``fuse_epilogues(model)``: the residual add and the ReLU / ReLU6 after a
sparse conv, and the activation after a ``DepthwiseConv2d`` or an
``InputConv2d``, run in the conv's epilogue: a sparse conv's in its forward
op (eager, under autograd and in a ``torch.compile`` graph alike), the NCHW
kernels' in eager inference.

A ReLU module reads and writes every activation once more, and an
out-of-place add twice; a conv whose ``activation`` is set clamps its output
in registers before the store (``sparsekernels.activation``), and a sparse
conv called with a ``residual`` adds it before the activation (the 1xN CPU
kernel in its store, the others in place on their fresh output). What fuses
is read off the model's graph (``torch.fx``, the library's modules kept as
leaves, as ``fold_batchnorm`` reads it), for a conv called once whose output
nothing else reads:
- ``act(conv(x))``, ``act`` an ``nn.ReLU`` / ``nn.ReLU6`` module or
  ``F.relu`` / ``torch.relu`` / ``F.relu6``: the conv's activation;
- ``conv(x) + r`` (``+``, ``+=`` or ``torch.add``, either order; a sparse
  conv only), and ``act`` of that sum where nothing else reads it: the conv
  called as ``conv(x, residual=r)`` where the add was, with that activation.
``nn.Identity`` calls (a folded BatchNorm) are dropped from the graph first.
An activation module shared between several calls (torchvision's ResNet
blocks use one ReLU three times) fuses where its input is such a conv and
stays a call everywhere else: that is why the result is a new graph.
"""
from __future__ import annotations

import copy
import logging
import operator
from collections import Counter
from typing import Optional

import torch
from torch import fx, nn

from .activation import ACTIVATIONS, FusedActivation
from .fold_bn import library_graph
from .nn.base import SparseConv2d

log = logging.getLogger("sparsekernels")

_ADDS = (operator.add, operator.iadd, torch.add)


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


class _Fuser:
    def __init__(self, graph: fx.Graph, modules: dict):
        self.graph, self.modules = graph, modules
        self.calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
        self.fused = 0

    def conv_of(self, node, cls=FusedActivation):
        """``node``'s module if it is a plain call of a ``cls`` conv, called
        once, without an activation yet, whose output only one node reads."""
        if not (isinstance(node, fx.Node) and node.op == "call_module"):
            return None
        conv = self.modules[node.target]
        if (isinstance(conv, cls) and conv.activation is None and len(node.users) == 1
                and self.calls[node.target] == 1 and len(node.args) == 1 and not node.kwargs):
            return conv
        return None

    def activation_after(self, node: fx.Node) -> tuple[Optional[fx.Node], Optional[str]]:
        """The activation node that alone reads ``node``, and its name."""
        if len(node.users) != 1:
            return None, None
        user = next(iter(node.users))
        name = _activation_of(user, self.modules)
        return (user, name) if name and user.args[0] is node else (None, None)

    def fuse_residual(self, add: fx.Node) -> None:
        if add.kwargs or len(add.args) != 2:
            return
        for conv_node, residual in (add.args, add.args[::-1]):
            conv = self.conv_of(conv_node, SparseConv2d)
            if conv is not None and isinstance(residual, fx.Node) and residual is not conv_node:
                break
        else:
            return
        act_node, name = self.activation_after(add)
        with self.graph.inserting_before(add):  # where the residual is known
            fused = self.graph.call_module(conv_node.target, conv_node.args,
                                           {"residual": residual})
        last = act_node or add
        last.replace_all_uses_with(fused)
        for node in (act_node, add, conv_node):
            if node is not None:
                self.graph.erase_node(node)
        conv.activation = name
        self.fused += 1 + (act_node is not None)

    def fuse_activation(self, node: fx.Node) -> None:
        name = _activation_of(node, self.modules)
        src = node.args[0] if name else None
        conv = self.conv_of(src)
        if conv is not None:
            conv.activation = name
            node.replace_all_uses_with(src)
            self.graph.erase_node(node)
            self.fused += 1


def fuse_epilogues(model: nn.Module) -> fx.GraphModule:
    """A ``torch.fx.GraphModule`` computing what ``model`` computes, with the
    residual adds and ReLU / ReLU6 that directly follow a conv (see the
    module's text) moved into that conv's epilogue. It holds a copy of
    ``model``'s modules (a fused conv computes something else than its
    original: ``model`` is left as it was). For inference run
    ``fold_batchnorm`` first, so that a BatchNorm between the conv and what
    follows it is gone; a model without one trains fused too."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected an nn.Module, got {type(model).__name__}")
    model = copy.deepcopy(model)
    graph = library_graph(model, "fuse_epilogues")
    modules = dict(model.named_modules())
    _drop_identities(graph, modules)
    fuser = _Fuser(graph, modules)
    for node in list(graph.nodes):
        if node.op == "call_function" and node.target in _ADDS:
            fuser.fuse_residual(node)
    for node in list(graph.nodes):
        fuser.fuse_activation(node)
    graph.lint()
    fused_model = fx.GraphModule(model, graph, class_name=type(model).__name__)
    fused_model.delete_all_unused_submodules()
    log.info("fuse_epilogues: fused %d adds and activations into the conv before each",
             fuser.fused)
    return fused_model
