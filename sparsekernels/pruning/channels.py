"""The channel-dependency graph of a network: which tensors share a producer's
output channels, found by tracing the model with ``torch.fx``.

A **channel group** starts at a producer (``nn.Conv2d`` or ``nn.Linear``) and
follows its output through everything that keeps channel ``c`` in place: BN
(its gamma, beta and running stats are per channel), elementwise activations,
dropout, pooling, depthwise convs (one filter per channel) and their BNs,
spatial means, a flatten before a Linear. It ends at the consumers: a dense
``nn.Conv2d`` (input channel ``c``) or an ``nn.Linear`` (input features
``c*k .. c*k+k-1`` after flattening a ``k``-pixel map). Permuting or slicing
the producer's filters is exact only if the same index is applied to every
tensor of the group, so a group is **coupled** (excluded) as soon as its
channels meet anything else: an add/mul/cat with another producer's tensor
(residual adds, squeeze-and-excitation gates), the model output, a grouped
conv, a reshape other than a final flatten, or any op not listed here.

Assumptions (not checked, as no input is traced): a Conv2d's output is a
batched ``[N, C, H, W]`` map and a Linear's a ``[N, C]`` matrix.
"""
from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass, field
from typing import Optional

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils import parametrize

from ..nn.base import SparseConv2d
from .base import is_depthwise

# Modules and functions that act on each element (or each channel) alone.
_ELEMENTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Softplus, nn.Identity,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout,
)
_ELEMENTWISE_FUNCTIONS = {
    F.relu, F.relu_, torch.relu, torch.relu_, F.relu6, F.leaky_relu, F.elu, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish, F.hardsigmoid, F.hardtanh, torch.sigmoid, F.sigmoid,
    torch.tanh, F.tanh, F.softplus, F.dropout, F.dropout2d, F.alpha_dropout, torch.clamp,
}
_ELEMENTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "tanh_", "clamp", "clamp_", "contiguous",
    "clone",
}
# Per-channel over the spatial axes only: valid on an [N, C, H, W] map.
_SPATIAL_MODULES = (
    nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.LPPool2d,
    nn.Upsample, nn.ZeroPad2d,
)
_SPATIAL_FUNCTIONS = {
    F.max_pool2d, F.avg_pool2d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F.interpolate,
}
_MERGE_FUNCTIONS = {
    operator.add, operator.iadd, operator.sub, operator.isub, operator.mul, operator.imul,
    operator.truediv, operator.itruediv, torch.add, torch.sub, torch.mul, torch.div,
}
_MERGE_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_REDUCTIONS = {torch.mean, torch.amax, torch.sum}
_FLAT = None  # Place.spatial_dims of a flattened [N, C*k] tensor (k unknown until the Linear)


@dataclass
class ChannelGroup:
    """The tensors whose channel axis is ``producer``'s output channels.

    ``bns`` normalise the producer's output directly (before any depthwise
    conv); ``depthwise`` pass the channels through, each with the BNs in
    ``depthwise_bns`` after it. ``consumers`` maps each layer that reads the
    channels to the number of its input features per channel (1 for a conv,
    ``H*W`` for a Linear after a flatten). All names are module names.
    """

    producer: str
    channels: int
    bns: list[str] = field(default_factory=list)
    depthwise: list[str] = field(default_factory=list)
    depthwise_bns: list[str] = field(default_factory=list)
    consumers: dict[str, int] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def coupled(self) -> bool:
        """True when some tensor on the group is shared with, or not understood
        as, a per-channel op: its channels cannot be permuted or sliced alone."""
        return bool(self.reasons)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons)

    @property
    def all_bns(self) -> list[str]:
        return self.bns + self.depthwise_bns


@dataclass(frozen=True)
class _Place:
    """How the group's channels sit in one traced tensor: channel axis 1
    followed by ``spatial_dims`` per-channel axes, or flattened (``_FLAT``)."""

    spatial_dims: Optional[int]
    after_depthwise: bool = False


def _passes_channels(conv: nn.Conv2d) -> bool:
    """A depthwise conv with one filter per input channel: channel ``c`` in
    gives channel ``c`` out (a channel multiplier > 1 would not)."""
    return is_depthwise(conv) and conv.out_channels == conv.in_channels


class _Tracer(fx.Tracer):
    # A sparse conv must stay one node: its internals are custom ops.
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, SparseConv2d) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> fx.Graph:
    try:
        return _Tracer().trace(model)
    except Exception as e:  # fx raises many types; all mean "cannot trace"
        raise ValueError(
            f"model: torch.fx could not trace {type(model).__name__} ({type(e).__name__}: {e}); "
            "channel groups need a symbolically traceable model"
        ) from e


def channel_groups(model: nn.Module) -> list[ChannelGroup]:
    """One :class:`ChannelGroup` per ``nn.Conv2d``/``nn.Linear`` producer of
    ``model`` (depthwise convs excluded: they belong to their input's group),
    in graph order."""
    graph = trace(model)
    modules = dict(model.named_modules())
    nodes = list(graph.nodes)
    calls: dict[str, int] = {}
    for node in nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    groups = []
    for i, node in enumerate(nodes):
        if node.op != "call_module":
            continue
        module = modules[node.target]
        if not isinstance(module, (nn.Conv2d, nn.Linear)) or (
            isinstance(module, nn.Conv2d) and _passes_channels(module)
        ):
            continue
        groups.append(_follow(node, nodes[i + 1:], modules, calls))
    return groups


def _follow(start: fx.Node, later: list[fx.Node], modules, calls) -> ChannelGroup:
    """Walk the nodes after ``start`` in graph order, so every input of a node
    is classified before the node itself."""
    producer = modules[start.target]
    is_conv = isinstance(producer, nn.Conv2d)
    group = ChannelGroup(start.target, producer.out_channels if is_conv else producer.out_features)
    if calls[start.target] > 1:
        _couple(group, f"{start.target} is called {calls[start.target]} times (shared weights)")
    if parametrize.is_parametrized(producer):
        _couple(group, f"{start.target} has parametrized tensors")
    elif type(producer) not in (nn.Conv2d, nn.Linear):  # surgery rebuilds plain modules
        _couple(group, f"{start.target} is a {type(producer).__name__}, not a plain Conv2d/Linear")
    if is_conv and producer.groups > 1:
        _couple(group, f"{start.target} is a grouped conv (groups={producer.groups})")
    places = {start: _Place(2 if is_conv else 0)}
    for node in later:
        inputs = [a for a in node.all_input_nodes if a in places]
        if inputs:
            place = _classify(node, inputs, places, modules, calls, group)
            if place is not None:
                places[node] = place
    return group


def _classify(node, inputs, places, modules, calls, group: ChannelGroup) -> Optional[_Place]:
    """Record what ``node`` does with the group's channels; return the place of
    its output if that output still carries them, else None."""
    place = places[inputs[0]]
    if node.op == "output":
        _couple(group, "reaches the model output")
        return None
    if node.op == "call_module":
        return _classify_module(node, place, modules, calls, group)
    target = node.target
    if (node.op == "call_function" and target in _MERGE_FUNCTIONS) or (
        node.op == "call_method" and target in _MERGE_METHODS
    ):
        return _classify_merge(node, places, group)
    if node.op == "call_function" and target in (torch.cat, torch.stack, torch.concat):
        _couple(group, f"concatenated at {node.name}")
        return None
    # Every remaining op is unary: the group's tensor must be its input and no
    # other tensor may take part (it could carry channels of its own).
    others = [a for a in node.all_input_nodes if a is not inputs[0] and not _reads_batch_size(a)]
    if node.args[:1] != (inputs[0],) or others:
        _couple(group, f"{_op_name(node)} at node {node.name} mixes it with other inputs")
        return None
    if _reads_batch_size(node) or (_is_shape(node) and all(map(_reads_batch_size, node.users))):
        return None  # read for a view(n, -1): not a use of the channels
    out = _unary_place(node, place)
    if out is None:
        _couple(group, f"{_op_name(node)} at node {node.name} is not a known per-channel op here")
    return out


def _classify_module(node, place: _Place, modules, calls, group: ChannelGroup) -> Optional[_Place]:
    name, module = node.target, modules[node.target]
    stateful = any(True for _ in module.parameters()) or any(True for _ in module.buffers())
    if calls[name] > 1 and stateful:  # a parameter-free module (ReLU) may be reused freely
        _couple(group, f"{name} is called {calls[name]} times (shared weights)")
        return None
    if parametrize.is_parametrized(module):
        _couple(group, f"{name} has parametrized tensors")
        return None
    kind = type(module)
    spatial = place.spatial_dims
    if kind is nn.Conv2d and spatial == 2:
        if module.in_channels != group.channels:
            _couple(group, f"{name} expects {module.in_channels} input channels, "
                           f"not {group.channels}")
        elif module.groups == 1:
            group.consumers[name] = 1
        elif _passes_channels(module):
            group.depthwise.append(name)
            return _Place(2, after_depthwise=True)
        else:
            _couple(group, f"{name} is a grouped conv (groups={module.groups})")
        return None
    if kind is nn.Linear and spatial in (0, _FLAT):
        per_channel, rest = divmod(module.in_features, group.channels)
        if rest or (spatial == 0 and per_channel != 1):
            _couple(group, f"{name} has {module.in_features} input features, not a multiple "
                           f"of {group.channels} channels")
        else:
            group.consumers[name] = per_channel
        return None
    if (kind is nn.BatchNorm2d and spatial == 2) or (kind is nn.BatchNorm1d and spatial in (0, 1)):
        (group.depthwise_bns if place.after_depthwise else group.bns).append(name)
        return place
    if kind in _ELEMENTWISE_MODULES or (kind is nn.PReLU and module.num_parameters == 1):
        return place
    if kind in _SPATIAL_MODULES and spatial == 2:
        return place
    if kind is nn.Flatten and module.start_dim == 1 and module.end_dim == -1:
        return _flattened(place)
    _couple(group, f"{name} ({kind.__name__}) is not a known per-channel op here")
    return None


def _classify_merge(node, places, group: ChannelGroup) -> Optional[_Place]:
    """An elementwise op of two tensors keeps the group only if both are the
    group's own tensors in the same layout (e.g. ``x * relu6(x + 3)``)."""
    tensors = node.all_input_nodes
    if not all(t in places for t in tensors):
        _couple(group, f"{_op_name(node)} at node {node.name} merges it with another tensor "
                       "(residual add, gate or branch merge)")
        return None
    layouts = {places[t].spatial_dims for t in tensors}
    if len(layouts) > 1:
        _couple(group, f"{_op_name(node)} at node {node.name} broadcasts between layouts")
        return None
    return _Place(layouts.pop(), any(places[t].after_depthwise for t in tensors))


def _unary_place(node, place: _Place) -> Optional[_Place]:
    spatial, target = place.spatial_dims, node.target
    if node.op == "call_function":
        if target in _ELEMENTWISE_FUNCTIONS:
            return place
        if target in _SPATIAL_FUNCTIONS:
            return place if spatial == 2 else None
        if target is F.pad:
            pad = _arg(node, 1, "pad")
            return place if spatial is not _FLAT and len(pad) <= 2 * spatial else None
        if target is operator.getitem:
            return place if _is_spatial_slice(node.args[1], spatial) else None
        if target is torch.flatten:
            return _flatten_call(node, place)
        if target is torch.reshape:
            return _reshape_call(node, place, _arg(node, 1, "shape"))
        if target in _REDUCTIONS:
            return _reduction(node, place)
        return None
    if node.op == "call_method":
        if target in _ELEMENTWISE_METHODS:
            return place
        if target == "flatten":
            return _flatten_call(node, place)
        if target in ("view", "reshape"):
            shape = node.args[1:]
            if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
                shape = shape[0]
            return _reshape_call(node, place, shape)
        if target in ("mean", "amax", "sum"):
            return _reduction(node, place)
    return None


def _reads_batch_size(node) -> bool:
    """``x.size(0)`` or ``x.shape[0]``."""
    if node.op == "call_method" and node.target == "size":
        return _arg(node, 1, "dim") == 0
    return (node.op == "call_function" and node.target is operator.getitem
            and _is_shape(node.args[0]) and node.args[1] == 0)


def _is_shape(node) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target is builtins.getattr and node.args[1] == "shape")


def _flattened(place: _Place) -> _Place:
    # Flattening [N, C, *spatial] from axis 1 is channel-major: channel c owns
    # one contiguous run of features, which a consumer Linear slices as a block.
    return place if place.spatial_dims in (0, _FLAT) else _Place(_FLAT, place.after_depthwise)


def _flatten_call(node, place: _Place) -> Optional[_Place]:
    # start_dim defaults to 0, which would flatten the batch axis in too.
    start, end = _arg(node, 1, "start_dim", 0), _arg(node, 2, "end_dim", -1)
    rank = 2 + (place.spatial_dims or 0)
    return _flattened(place) if start == 1 and end % rank == rank - 1 else None


def _reshape_call(node, place: _Place, shape) -> Optional[_Place]:
    # Only (batch, -1): a hard-coded feature count would break once sliced.
    if len(shape) == 2 and shape[1] == -1:
        return _flattened(place)
    return None


def _reduction(node, place: _Place) -> Optional[_Place]:
    """A mean/amax/sum over spatial axes only keeps each channel's own value."""
    if place.spatial_dims in (0, _FLAT):
        return None
    dims = _arg(node, 1, "dim")
    dims = (dims,) if isinstance(dims, int) else dims
    if not isinstance(dims, (tuple, list)) or not dims or not all(isinstance(d, int) for d in dims):
        return None
    rank = 2 + place.spatial_dims
    if not all(2 <= d % rank for d in dims) or not all(-rank <= d < rank for d in dims):
        return None
    keep = _arg(node, 2, "keepdim", False)
    return place if keep else _Place(place.spatial_dims - len(set(d % rank for d in dims)),
                                      place.after_depthwise)


def _is_spatial_slice(index, spatial: Optional[int]) -> bool:
    """``x[:, :, ::2, ::2]``: batch and channel axes untouched."""
    if spatial is _FLAT or not isinstance(index, tuple) or len(index) > 2 + spatial:
        return False
    full = slice(None, None, None)
    return index[:2] == (full, full) and all(isinstance(i, slice) for i in index[2:])


def _couple(group: ChannelGroup, reason: str) -> None:
    if reason not in group.reasons:  # several branches can hit the same node
        group.reasons.append(reason)


def _arg(node, position: int, keyword: str, default=None):
    if len(node.args) > position:
        return node.args[position]
    return node.kwargs.get(keyword, default)


def _op_name(node) -> str:
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


def groups_by_producer(model: nn.Module, names, argument: str) -> dict[str, ChannelGroup]:
    """``{producer name: group}`` of ``model``; each of ``names`` must be one."""
    groups = {g.producer: g for g in channel_groups(model)}
    for name in names:
        if name not in groups:
            raise ValueError(
                f"{argument}: {name!r} is not a Conv2d/Linear producer of the model "
                f"(depthwise convs belong to their input's group)")
    return groups
