"""Run an exported file without ONNX Runtime: ``onnx.reference`` with one
``OpRun`` per kind, generated from the registry.

Each run reads its node as the loader does (attributes and tensors validated,
the format rebuilt by its own ``from_state_dict``) and calls the library's
conv on the arrays it is given, numpy -> torch -> numpy.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from ..kinds import KINDS, KindSpec
from ..optional import require
from .layout import DOMAIN, op_type
from .read import sparse_conv


def _op_run(spec: KindSpec, base: type) -> type:
    def _run(self, x: np.ndarray, *arrays: np.ndarray, **attributes):
        # The attributes are read (and checked) from the node itself.
        by_name = dict(zip(self.onnx_node.input[1:], arrays))
        node = sparse_conv(self.onnx_node, lambda role, name: by_name[name])
        conv = node.geometry.conv
        with torch.no_grad():
            out = spec.conv2d(torch.from_numpy(np.array(x)), node.format, node.bias,
                              stride=conv.stride, padding=conv.padding,
                              dilation=conv.dilation, groups=conv.groups)
        return (out.numpy(),)

    return type(op_type(spec), (base,), {"op_domain": DOMAIN, "_run": _run})


def reference_ops() -> list[type]:
    """One ``onnx.reference.op_run.OpRun`` subclass per kind, for
    ``ReferenceEvaluator(..., new_ops=reference_ops())``."""
    op_run = require("onnx.reference.op_run", "onnx")
    return [_op_run(spec, op_run.OpRun) for spec in KINDS.values()]


def reference_evaluator(model: str | os.PathLike | object, **options):
    """An ``onnx.reference.ReferenceEvaluator`` of ``model`` (a path or a
    ``ModelProto``) that runs the sparse nodes; ``options`` go to it."""
    reference = require("onnx.reference", "onnx")
    if isinstance(model, os.PathLike):
        model = os.fspath(model)
    return reference.ReferenceEvaluator(model, new_ops=reference_ops(), **options)
