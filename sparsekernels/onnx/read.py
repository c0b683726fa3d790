"""Read sparse conv nodes back into the library's formats, validated.

:func:`sparse_conv` turns one node and its input arrays into a
:class:`SparseConvNode` (the loader passes the file's initializers, the
reference runner the arrays it is run on); every attribute and tensor is
checked, the format by its own ``from_state_dict``, before anything uses it.
Every error is a ValueError naming the node, the field and what was expected.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, NamedTuple, Optional

import numpy as np
import torch
from torch import Tensor

from ..kinds import KindSpec
from ..nn.base import SparseConv2d
from ..optional import require
from .layout import DOMAIN, DOMAIN_VERSION, Geometry, format_inputs, kind_of


class SparseConvNode(NamedTuple):
    name: str  # the ONNX node's
    kind: KindSpec
    geometry: Geometry
    format: object  # the kind's format (``kind.format``), validated
    bias: Optional[Tensor]

    def module(self, backend: str = "auto") -> SparseConv2d:
        """The node as the kind's drop-in module."""
        conv = self.geometry.conv
        return self.kind.module.from_format(self.format, self.bias, conv.stride, conv.padding,
                                            conv.dilation, backend=backend)


@contextlib.contextmanager
def _naming(node) -> Iterator[None]:
    """Raise any ValueError/TypeError inside (the formats' checks raise
    both) as a ValueError naming the node: every problem with a file is one."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise ValueError(f"ONNX node {node.name!r} ({node.op_type}): {exc}") from exc


def sparse_conv(node, array_of: Callable[[str, str], np.ndarray]) -> SparseConvNode:
    """The validated node; ``array_of(role, input_name)`` gives each input
    after X (``role``: the format field, or ``"B"``)."""
    with _naming(node):
        spec = kind_of(node.op_type)
        roles = format_inputs(spec)
        names = list(node.input[1:])
        if names and names[-1] == "":  # an omitted optional input
            names.pop()
        if len(names) not in (len(roles), len(roles) + 1):
            raise ValueError(f"inputs: expected X, {', '.join(roles)} and an optional B "
                             f"({len(roles) + 1} or {len(roles) + 2}), got {list(node.input)}")
        geometry = Geometry.from_attributes(spec, node.attribute)
        tensors = {role: _tensor(role, array_of(role, name))
                   for role, name in zip((*roles, "B"), names)}
        bias = tensors.pop("B", None)
        meta = torch.tensor(geometry.meta(), dtype=torch.int64)
        fmt = spec.format.from_state_dict({**tensors, "meta": meta})
        if bias is not None:
            _check_bias(bias, geometry.weight_shape[0], fmt.values.dtype)
    return SparseConvNode(node.name, spec, geometry, fmt, bias)


def read_sparse_convs(model) -> list[SparseConvNode]:
    """Every sparse conv node of an ONNX file (a path or a ``ModelProto``),
    in graph order, its tensors read from the file's initializers."""
    onnx = require("onnx", "onnx")
    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(os.fspath(model))
    initializers = {t.name: t for t in proto.graph.initializer}

    def initializer(role: str, name: str) -> np.ndarray:
        if name not in initializers:
            raise ValueError(f"input {role!r} ({name!r}): expected an initializer (the "
                             f"format's saved state), got a value computed in the graph")
        return onnx.numpy_helper.to_array(initializers[name])

    nodes = [node for node in proto.graph.node if node.domain == DOMAIN]
    version = {o.domain: o.version for o in proto.opset_import}.get(DOMAIN)
    if nodes and version != DOMAIN_VERSION:
        raise ValueError(f"opset_import: expected domain {DOMAIN!r} version {DOMAIN_VERSION}, "
                         f"got {version}")
    return [sparse_conv(node, initializer) for node in nodes]


def _tensor(role: str, array: np.ndarray) -> Tensor:
    try:  # a copy: ONNX arrays may be read-only views of the file
        return torch.from_numpy(np.array(array))
    except TypeError as exc:
        raise TypeError(f"{role}: expected a numeric tensor, got dtype {array.dtype}") from exc


def _check_bias(bias: Tensor, cout: int, dtype: torch.dtype) -> None:
    if tuple(bias.shape) != (cout,) or bias.dtype != dtype:
        raise ValueError(f"B: expected a [{cout}] tensor of {dtype} (the values' dtype), got "
                         f"{list(bias.shape)} of {bias.dtype}")
