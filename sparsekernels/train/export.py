"""``export``: turn a pruned model into one that runs on the sparse kernels.

Layers pruned to 1xN become :class:`BlockSparseConv2d` built from their kept
mask (so the format holds exactly the blocks training kept). Kinds whose
kernels have not landed yet (stripe, pattern) stay dense convs with zeros;
their masks travel in the file so they can be converted once the format
exists. An ONNX file of the dense-equivalent model is offered too, as the
1xN seed code does.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..models import MODELS
from ..nn.block_conv import BlockSparseConv2d
from ..nn.replace import replace_module
from .artifacts import load_model, read_record, resize_to, save_model

log = logging.getLogger("sparsekernels")
FORMAT = "sparsekernels.export/1"


def to_sparse_modules(model: nn.Module, masks: dict[str, torch.Tensor], n: int,
                      backend: str = "auto") -> list[str]:
    """Swap each masked ``nn.Conv2d`` for a 1xN ``BlockSparseConv2d`` holding
    exactly its kept blocks; returns the names converted. Others are logged."""
    converted = []
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if type(module) is not nn.Conv2d:
            log.info("export: %s (%s) stays dense: no sparse module for it yet",
                     name, type(module).__name__)
            continue
        replace_module(model, name, BlockSparseConv2d.from_dense(
            module, n=n, mask=mask.to(module.weight.device), backend=backend))
        converted.append(name)
    return converted


def export(pruned_path: str | Path, out_path: str | Path,
           onnx_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Read ``pruned.pt``, write the sparse model to ``out_path`` (and an ONNX
    file of the dense-equivalent model to ``onnx_path``); returns a summary."""
    model, record = load_model(pruned_path)
    config = json.loads(record.get("config", "{}"))
    method, masks = record.get("method", "dense"), record.get("masks", {})
    if onnx_path:
        export_onnx(model, record["arch"], onnx_path)
    sparse = {}
    if method == "1xn":
        n = int(config["N"])
        for name in to_sparse_modules(model, masks, n):
            sparse[name] = {"kind": "1xN", "n": n}
        masks = {k: v for k, v in masks.items() if k not in sparse}
    save_model(out_path, model, record["arch"], record["num_classes"], export_format=FORMAT,
               method=method, config=record.get("config", "{}"),
               sparse_layers=json.dumps(sparse), masks=masks)
    summary = {"out": str(out_path), "method": method, "sparse_layers": sorted(sparse),
               "dense_masked_layers": sorted(masks), "onnx": str(onnx_path) if onnx_path else None}
    log.info("export: %s", summary)
    return summary


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild an exported model: its sparse layers are validated by
    ``BlockSparseConv2d.load_state_dict`` before any kernel runs."""
    record = read_record(path)
    if record.get("export_format") != FORMAT:
        raise ValueError(f"exported model {path}: expected export_format {FORMAT!r}, "
                         f"got {record.get('export_format')!r}")
    from ..models import get_model

    model = get_model(record["arch"], num_classes=record["num_classes"])
    state = record["state_dict"]
    resize_to(model, state)
    for name, spec in json.loads(record["sparse_layers"]).items():
        conv = model.get_submodule(name)
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"exported model {path}: layer {name!r} is not a conv in "
                             f"{record['arch']}")
        replace_module(model, name, BlockSparseConv2d(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
            n=int(spec["n"])))
    model.load_state_dict(state)
    return model


def export_onnx(model: nn.Module, arch: str, path: str | Path) -> Path:
    """ONNX of the dense-equivalent model (zeros kept as weights)."""
    try:
        import onnx  # noqa: F401  (the exporter needs it; say so plainly)
    except ImportError as exc:
        raise RuntimeError("export_onnx: the 'onnx' package is not installed "
                           "(pip install onnx onnxscript)") from exc
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, *MODELS[arch].input_shape)
    model.eval()
    torch.onnx.export(model, (example,), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                      dynamo=False)
    return path
