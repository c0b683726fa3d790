"""Export a model to ONNX with each sparse conv as one custom-domain node.

Route: the TorchScript exporter, with an ONNX symbolic registered for each
kind's forward custom op (``sparsekernels::<slug>_conv2d``). The op is what
every sparse module calls, after ``F.conv2d``'s padding rules: an asymmetric
``'same'`` pad and a non-zeros ``padding_mode`` are an explicit ``F.pad``
before it, which exports as standard Pad (or Slice/Concat) nodes, so the
sparse node itself only ever pads symmetrically.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.onnx import symbolic_helper as sh

from ..conv_args import ConvArgs
from ..kinds import KINDS, KindSpec
from ..optional import require
from .layout import DOMAIN, DOMAIN_VERSION, Geometry, op_type

DEFAULT_OPSET = 20  # the newest the TorchScript exporter writes (and its default)


def _symbolic(spec: KindSpec):
    """The ONNX symbolic of ``spec``'s forward op: X, the format's saved
    index tensors (the topology's derived ones are dropped: a loader
    rebuilds them), values and the optional bias; the geometry as attributes."""
    saved = [spec.format.Topology.TENSORS.index(name) for name in spec.format.INDEX_TENSORS]

    @sh.parse_args("v", "v", "v", "is", "v", "v", "is", "is", "is", "i", "s", "v", "v")
    def symbolic(g, x, values, topology, meta, bias, residual, stride, padding, dilation, groups,
                 backend, out_min, out_max):
        geometry = Geometry.from_op_args(spec, meta, ConvArgs(tuple(stride), tuple(padding),
                                                              tuple(dilation), groups))
        topology = sh._unpack_list(topology)
        inputs = [x, *(topology[i] for i in saved), values]
        if not sh._is_none(bias):
            inputs.append(bias)
        attributes = {f"{name}_i": value for name, value in geometry.attributes().items()}
        out = g.op(f"{DOMAIN}::{op_type(spec)}", *inputs, **attributes)
        sizes = sh._get_tensor_sizes(x)
        typed = None if sizes is None else x.type().with_sizes(geometry.output_sizes(sizes))
        if typed is not None:  # typed, so shape inference runs on past the node
            out.setType(typed)
        return _epilogue(g, out, residual, out_min, out_max, typed)

    return symbolic


def _epilogue(g, out, residual, out_min, out_max, typed):
    """The op's fused epilogue as standard nodes after the sparse one:
    ``Add`` of the residual, then ``Relu`` (a clamp at zero alone) or
    ``Clip``. The sparse node stays the conv alone, as its layout defines."""
    nodes = []
    if not sh._is_none(residual):
        nodes.append(g.op("Add", out, residual))
    lo, hi = (None if sh._is_none(v) else sh._maybe_get_const(v, "f") for v in (out_min, out_max))
    if (lo, hi) == (0.0, None):
        nodes.append(g.op("Relu", nodes[-1] if nodes else out))
    elif (lo, hi) != (None, None):
        # Clip's bounds are tensors of its input's dtype; an open side is inf.
        dtype = sh._type_utils.JitScalarType.from_value(
            out, sh._type_utils.JitScalarType.FLOAT).dtype()
        lo, hi = (-math.inf if lo is None else lo), (math.inf if hi is None else hi)
        nodes.append(g.op("Clip", nodes[-1] if nodes else out,
                          *(g.op("Constant", value_t=torch.tensor(v, dtype=dtype))
                            for v in (lo, hi))))
    for node in nodes:
        if typed is not None:
            node.setType(typed)
    return nodes[-1] if nodes else out


def _register_symbolics(opset: int) -> None:
    for spec in KINDS.values():
        torch.onnx.register_custom_op_symbolic(f"sparsekernels::{spec.slug}_conv2d",
                                               _symbolic(spec), opset)


def export(model: nn.Module, example_input: Tensor, path: str | os.PathLike, *,
           opset: int = DEFAULT_OPSET, input_name: str = "input",
           output_name: str = "output") -> Path:
    """Write ``model`` (one input tensor, one output) to ONNX at ``path``, in
    eval mode, with a dynamic batch axis; each sparse conv is one
    ``sparsekernels`` node (see the package doc). The file is checked by
    ``onnx.checker`` before this returns."""
    onnx = require("onnx", "onnx")
    if not isinstance(example_input, Tensor) or example_input.dim() != 4:
        got = (list(example_input.shape) if isinstance(example_input, Tensor)
               else type(example_input).__name__)
        raise ValueError(f"example_input: expected a 4-D [N, C, H, W] tensor, got {got}")
    _register_symbolics(opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter is chosen on purpose (it takes custom
        # symbolics): its deprecation notices, ours and its own internals',
        # ask nothing of the caller. The ops' channel check reads a traced
        # shape that the format fixes, so the trace does generalise.
        warnings.filterwarnings("ignore", "You are using the legacy TorchScript-based ONNX",
                                DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx\.")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning,
                                module=r"sparsekernels\.ops\.sparse_conv")
        torch.onnx.export(model, (example_input,), str(path), dynamo=False,
                          opset_version=opset, input_names=[input_name],
                          output_names=[output_name],
                          dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                          custom_opsets={DOMAIN: DOMAIN_VERSION})
    onnx.checker.check_model(str(path))
    return path
