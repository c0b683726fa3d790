"""``export``: turn a pruned model into one that runs on the sparse kernels.

Layers pruned to 1xN become :class:`Block1xNConv2d` built from their kept
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
from ..kinds import KINDS
from ..nn.replace import replace_module
from .artifacts import (
    build_model_of, check_patterns, checked_masks, config_of, layer_of, load_model, naming_file,
    output_width, read_record, save_model,
)

log = logging.getLogger("sparsekernels")
FORMAT = "sparsekernels.export/1"


_KIND = KINDS["block1xn"]  # the kind the 1xn method's masks have


def to_sparse_modules(model: nn.Module, masks: dict[str, torch.Tensor], n: int,
                      backend: str = "auto") -> list[str]:
    """Swap each masked ``nn.Conv2d`` for a 1xN ``Block1xNConv2d`` holding
    exactly its kept blocks; returns the names converted. Others are logged."""
    converted = []
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if type(module) is not nn.Conv2d:
            log.info("export: %s (%s) stays dense: no sparse module for it yet",
                     name, type(module).__name__)
            continue
        replace_module(model, name, _KIND.module.from_dense(
            module, n=n, mask=mask.to(module.weight.device), backend=backend))
        converted.append(name)
    return converted


# Record entries export rewrites; the others (DPP layers, pattern library)
# travel along unchanged.
_REWRITTEN = ("format", "arch", "num_classes", "state_dict", "masks", "method", "config",
              "export_format", "sparse_layers")


def export(pruned_path: str | Path, out_path: str | Path,
           onnx_path: Optional[str | Path] = None) -> dict[str, Any]:
    """Read ``pruned.pt``, write the sparse model to ``out_path`` (and an ONNX
    file of the dense-equivalent model to ``onnx_path``); returns a summary."""
    _check_distinct(pruned_model=pruned_path, out=out_path, export_onnx=onnx_path)
    model, record = load_model(pruned_path)
    cfg = config_of(record)
    method, masks = record.get("method", "dense"), record["masks"]
    if method == "1xn" and cfg is None:
        raise ValueError(f"model file {pruned_path}: method '1xn' without the config "
                         f"that holds its N")
    if onnx_path:
        export_onnx(model, record["arch"], onnx_path)
    sparse = {}
    if method == "1xn":
        for name in to_sparse_modules(model, masks, cfg.N):
            sparse[name] = {"kind": _KIND.label, "n": cfg.N}
        masks = {k: v for k, v in masks.items() if k not in sparse}
    extra = {k: v for k, v in record.items() if k not in _REWRITTEN}
    save_model(out_path, model, record["arch"], record["num_classes"], export_format=FORMAT,
               method=method, config=record.get("config", "{}"),
               sparse_layers=json.dumps(sparse), masks=masks, **extra)
    summary = {"out": str(out_path), "method": method, "sparse_layers": sorted(sparse),
               "dense_masked_layers": sorted(masks), "onnx": str(onnx_path) if onnx_path else None}
    log.info("export: %s", summary)
    return summary


def _check_distinct(**paths: Optional[str | Path]) -> None:
    """export reads one file and writes the others: none may be the same."""
    seen: dict[Path, str] = {}
    for name, path in paths.items():
        if path is None:
            continue
        resolved = Path(path).resolve()
        if resolved in seen:
            raise ValueError(f"{name}: {path} is also the {seen[resolved]} file; "
                             f"expected a different file")
        seen[resolved] = name


def load_exported(path: str | Path) -> nn.Module:
    """Rebuild an exported model: its sparse layers are validated by
    ``Block1xNConv2d.load_state_dict`` before any kernel runs. Every
    problem with the file is a ``ValueError`` naming it."""
    record = read_record(path)
    if record.get("export_format") != FORMAT:
        raise ValueError(f"exported model {path}: expected export_format {FORMAT!r}, "
                         f"got {record.get('export_format')!r}")
    with naming_file(path, "exported model"):
        model = build_model_of(record)
        for name, n in _sparse_layers(record).items():
            conv = layer_of(model, name, "sparse_layers")
            if type(conv) is not nn.Conv2d:
                raise ValueError(f"sparse_layers: {name!r} is a {type(conv).__name__}, "
                                 f"not a Conv2d in {record['arch']}")
            replace_module(model, name, _KIND.module(
                conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                conv.padding, conv.dilation, conv.groups, conv.bias is not None,
                conv.padding_mode, n=n))
        model.load_state_dict(record["state_dict"])
        checked_masks(model, record)
        check_patterns(model, record.get("patterns", {}))
        output_width(model, MODELS[record["arch"]].input_shape)
    return model


def _sparse_layers(record: dict[str, Any]) -> dict[str, int]:
    """``sparse_layers``: JSON ``{layer: {"kind": "1xN", "n": N}}`` with N the
    record's config N (export writes no other), so a hand-edited N cannot
    make the layers' padded block rows allocate without bound."""
    text = record.get("sparse_layers")
    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict):
        raise ValueError('sparse_layers: expected JSON {"layer": {"kind": "1xN", "n": N}}')
    cfg = config_of(record)
    layers = {}
    for name, entry in spec.items():
        n = entry.get("n") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or entry.get("kind") != _KIND.label:
            raise ValueError(f"sparse_layers: {name!r}: expected {{'kind': '1xN', 'n': N}}, "
                             f"got {entry!r}")
        if cfg is None or cfg.method != "1xn" or n != cfg.N or isinstance(n, bool):
            raise ValueError(f"sparse_layers: {name!r}: n={n!r} is not the 1xN config's N="
                             f"{cfg.N if cfg else None!r}")
        layers[name] = n
    return layers


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
