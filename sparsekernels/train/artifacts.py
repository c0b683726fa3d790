"""Saved models: a small dict of plain tensors (``torch.load(weights_only=True)``
reads it), never a pickled module.

A model is rebuilt from its ``arch`` and then resized to the saved weights,
so networks that filter pruning made narrower load without their own class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import Tensor, nn

from ..atomic_file import atomic_write
from ..models import get_model
from ..nn.replace import replace_module
from ..pruning.base import is_depthwise
from ..pruning.dppnet import convert_to_dpp
from ..pruning.surgery import bn_like, conv_like, linear_like

FORMAT = "sparsekernels.model/1"


def save_model(path: str | Path, model: nn.Module, arch: str, num_classes: int,
               **extra: Any) -> Path:
    """Write ``model`` atomically (``atomic_write``)."""
    record = {"format": FORMAT, "arch": arch, "num_classes": num_classes,
              "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
              **extra}
    with atomic_write(path) as f:
        torch.save(record, f)
    return Path(path)


def read_record(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise ValueError(f"model file {path}: not a readable torch file ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"model file {path}: expected a dict, got {type(record).__name__}")
    return record


def state_dict_of(path: str | Path) -> dict[str, Tensor]:
    """The weights in a model file, a training checkpoint or a bare state_dict
    (what ``--pretrained_model`` accepts)."""
    record = read_record(path)
    for key in ("state_dict", "model"):
        if isinstance(record.get(key), dict):
            return record[key]
    if all(isinstance(v, Tensor) for v in record.values()):
        return record
    raise ValueError(f"model file {path}: no 'state_dict' or 'model' entry and not a state_dict")


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns (model, record)."""
    record = read_record(path)
    if record.get("format") != FORMAT:
        raise ValueError(f"model file {path}: expected format {FORMAT!r}, "
                         f"got {record.get('format')!r}")
    model = get_model(record["arch"], num_classes=record["num_classes"])
    if "dpp_layers" in record:
        spec = json.loads(record["dpp_layers"])
        convert_to_dpp(model, layers=spec["layers"], num_patterns=spec["num_patterns"])
    resize_to(model, record["state_dict"])
    model.load_state_dict(record["state_dict"])
    return model, record


def resize_to(model: nn.Module, state: dict[str, Tensor]) -> nn.Module:
    """Replace each Conv2d / BatchNorm2d / Linear whose saved weight has another
    shape by one of the saved shape (filter pruning narrows layers)."""
    for name, module in list(model.named_modules()):
        weight = state.get(f"{name}.weight" if name else "weight")
        if weight is None or getattr(module, "weight", None) is None:
            continue
        if tuple(weight.shape) == tuple(module.weight.shape):
            continue
        replace_module(model, name, _resized(module, weight, name))
    return model


def _resized(module: nn.Module, weight: Tensor, name: str) -> nn.Module:
    if isinstance(module, nn.Conv2d):
        cout, cin_g = weight.shape[:2]
        groups = cout if is_depthwise(module) else module.groups
        return conv_like(module, cin_g * groups, cout, groups)
    if isinstance(module, nn.BatchNorm2d):
        return bn_like(module, weight.shape[0])
    if isinstance(module, nn.Linear):
        return linear_like(module, weight.shape[1], weight.shape[0])
    raise ValueError(f"model file: layer {name!r} ({type(module).__name__}) has a saved weight "
                     f"of shape {tuple(weight.shape)}, expected {tuple(module.weight.shape)}")


def maybe_load_pretrained(model: nn.Module, path: Optional[str]) -> bool:
    if not path:
        return False
    state = state_dict_of(path)
    resize_to(model, state)
    model.load_state_dict(state)
    return True
