"""Saved models: a small dict of plain tensors (``torch.load(weights_only=True)``
reads it), never a pickled module.

A model is rebuilt from its ``arch`` and then resized to the saved weights,
so networks that filter pruning made narrower load without their own class.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from torch import Tensor, nn

from ..atomic_file import atomic_write
from ..kinds import KINDS
from ..models import MODELS, get_model
from ..nn.replace import replace_module
from ..pruning.base import as_conv_weight, conv_groups, is_depthwise
from ..pruning.dppnet import convert_to_dpp
from ..pruning.surgery import bn_like, conv_like, linear_like
from .config import MAX_NUM_CLASSES, METHODS, RunConfig

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
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    if not path.is_file():
        raise ValueError(f"model file {path}: is not a file")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which
        raise ValueError(f"model file {path}: not a readable torch file ({exc})") from exc
    if not isinstance(record, dict):
        raise ValueError(f"model file {path}: expected a dict, got {type(record).__name__}")
    return record


@contextlib.contextmanager
def naming_file(path: str | Path, what: str = "model file") -> Iterator[None]:
    """Turn what a hand-edited file makes the checks, the model builders and
    ``load_state_dict`` raise into one ``ValueError`` naming the file."""
    try:
        yield
    except (ValueError, TypeError, RuntimeError, KeyError, IndexError, AttributeError) as exc:
        raise ValueError(f"{what} {path}: {exc}") from exc


def state_dict_of(path: str | Path) -> dict[str, Tensor]:
    """The weights in a model file, a training checkpoint or a bare state_dict
    (what ``--pretrained_model`` accepts)."""
    record = read_record(path)
    for key in ("state_dict", "model"):
        if isinstance(record.get(key), dict):
            state = record[key]
            break
    else:
        if not all(isinstance(v, Tensor) for v in record.values()):
            raise ValueError(f"model file {path}: no 'state_dict' or 'model' entry and not a "
                             f"state_dict")
        state = record
    with naming_file(path):
        check_state_dict(state)
    return state


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; returns (model, record)
    with the record checked (masks as bool tensors). Every problem with the
    file is a ``ValueError`` naming it."""
    record = read_record(path)
    if record.get("format") != FORMAT:
        raise ValueError(f"model file {path}: expected format {FORMAT!r}, "
                         f"got {record.get('format')!r}")
    if "export_format" in record:
        raise ValueError(f"model file {path}: is an exported (sparse) model; expected the "
                         f"pruned.pt it was exported from")
    with naming_file(path):
        model = build_model_of(record)
        model.load_state_dict(record["state_dict"])
        record["masks"] = checked_masks(model, record)
        check_patterns(model, record.get("patterns", {}))
        output_width(model, MODELS[record["arch"]].input_shape)
    return model, record


def output_width(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Logits per input, from one forward of a zero input: saved widths that
    do not chain (a hand-edited layer) fail here, with a ``ValueError``."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model(torch.zeros(1, *input_shape)).shape[-1]
    except RuntimeError as exc:
        raise ValueError(f"a forward of inputs {tuple(input_shape)} fails: {exc}") from exc
    finally:
        model.train(was_training)


def build_model_of(record: dict[str, Any]) -> nn.Module:
    """The record's architecture with its DPP layers and saved widths, weights
    not loaded yet. Checks the fields it reads before allocating anything."""
    arch, num_classes = record.get("arch"), record.get("num_classes")
    if not isinstance(arch, str) or arch not in MODELS:
        raise ValueError(f"arch: expected one of {sorted(MODELS)}, got {arch!r}")
    if (isinstance(num_classes, bool) or not isinstance(num_classes, int)
            or not 1 <= num_classes <= MAX_NUM_CLASSES):
        raise ValueError(f"num_classes: expected an int in [1, {MAX_NUM_CLASSES}], "
                         f"got {num_classes!r}")
    state = record.get("state_dict")
    check_state_dict(state)
    method = record.get("method", "dense")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    cfg = config_of(record)
    if cfg is not None and cfg.method != method:
        raise ValueError(f"method: {method!r} but its config says {cfg.method!r}")
    model = get_model(arch, num_classes=num_classes)
    if "dpp_layers" in record:
        layers, num_patterns = _dpp_spec(record["dpp_layers"], state, dpp_exported(record))
        convert_to_dpp(model, layers=layers, num_patterns=num_patterns)
    return resize_to(model, state)


def config_of(record: dict[str, Any]) -> Optional[RunConfig]:
    """The ``RunConfig`` a saved model was made with (None if not saved)."""
    if "config" not in record:
        return None
    text = record["config"]
    if not isinstance(text, str):
        raise ValueError(f"config: expected a JSON string, got {type(text).__name__}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"config: not valid JSON ({exc})") from exc
    try:
        return RunConfig.from_dict(data)
    except ValueError as exc:
        raise ValueError(f"config: {exc}") from exc


def check_state_dict(state: Any) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"state_dict: expected a dict, got {type(state).__name__}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(f"state_dict: expected names mapped to tensors, got {key!r}: "
                             f"{type(value).__name__}")
        if value.is_floating_point() and not torch.isfinite(value).all():
            raise ValueError(f"state_dict: {key!r} holds NaN or infinite values")


def checked_masks(model: nn.Module, record: dict[str, Any]) -> dict[str, Tensor]:
    """The record's kept-weight masks as bool tensors, after checking that
    each names a layer of ``model``, has its weight's shape, keeps every
    nonzero weight and, for a method whose layers become a sparse kind (1xN,
    stripe), has that kind's structure (its format's ``from_mask``)."""
    masks = record.get("masks", {})
    if not isinstance(masks, dict):
        raise ValueError(f"masks: expected a dict of layer names, got {type(masks).__name__}")
    cfg = config_of(record)
    kind = None
    if cfg is not None:
        from .methods import METHOD_CLASSES

        method = METHOD_CLASSES[cfg.method](cfg)
        if method.kind is not None:
            kind = KINDS[method.kind].format, list(method.kind_params().values())
    checked = {}
    for name, mask in masks.items():
        module = layer_of(model, name, "masks")
        weight = module.weight.detach()
        if not isinstance(mask, Tensor) or tuple(mask.shape) != tuple(weight.shape):
            got = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"masks: {name!r} expected a tensor of its weight's shape "
                             f"{tuple(weight.shape)}, got {got}")
        if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"masks: {name!r} holds values other than 0/1 (or bool)")
        mask = mask.bool()
        if weight[~mask].any():
            raise ValueError(f"masks: {name!r} prunes weights that are not zero")
        if kind is not None:
            fmt, params = kind
            try:
                fmt.from_mask(as_conv_weight(weight), as_conv_weight(mask), *params,
                              conv_groups(module))
            except ValueError as exc:
                raise ValueError(f"masks: {name!r}: {exc}") from exc
        checked[name] = mask
    return checked


def check_patterns(model: nn.Module, patterns: Any) -> None:
    """The pattern method's per-layer library ``[k, Kh, Kw]`` (bool) and
    pattern ids ``[Cout, Cin]`` in ``[-1, k)`` (-1: kernel dropped)."""
    if not isinstance(patterns, dict):
        raise ValueError(f"patterns: expected a dict, got {type(patterns).__name__}")
    for name, saved in patterns.items():
        weight = layer_of(model, name, "patterns").weight
        library = saved.get("library") if isinstance(saved, dict) else None
        ids = saved.get("pattern_id") if isinstance(saved, dict) else None
        if (not isinstance(library, Tensor) or library.dtype != torch.bool
                or tuple(library.shape[1:]) != tuple(weight.shape[2:]) or library.dim() != 3):
            raise ValueError(f"patterns: {name!r} library: expected a bool tensor "
                             f"[k, {', '.join(map(str, weight.shape[2:]))}]")
        if (not isinstance(ids, Tensor) or ids.is_floating_point() or ids.dtype == torch.bool
                or tuple(ids.shape) != tuple(weight.shape[:2])
                or ((ids < -1) | (ids >= library.shape[0])).any()):
            raise ValueError(f"patterns: {name!r} pattern_id: expected integers in "
                             f"[-1, {library.shape[0]}) of shape {tuple(weight.shape[:2])}")


def layer_of(model: nn.Module, name: Any, what: str) -> nn.Module:
    try:
        module = model.get_submodule(name) if isinstance(name, str) and name else None
    except AttributeError:
        module = None
    if not isinstance(getattr(module, "weight", None), Tensor):
        raise ValueError(f"{what}: {name!r} is not a layer with a weight in this model")
    return module


def dpp_exported(record: dict[str, Any]) -> list[str]:
    """``dpp_exported`` (an exported file's): JSON list of the DPP layers
    stored as ``DynamicPatternConv2d`` (``kernels`` and ``taps``, not
    ``weight``); each must be one of ``dpp_layers``. Empty when absent."""
    if "dpp_exported" not in record:
        return []
    text = record["dpp_exported"]
    try:
        names = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        names = None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError('dpp_exported: expected a JSON list of layer names')
    if names and "dpp_layers" not in record:
        raise ValueError("dpp_exported: names DPP layers, but the file has no dpp_layers")
    return names


def _dpp_spec(text: Any, state: dict[str, Tensor],
              exported: list[str] = ()) -> tuple[list[str], int]:
    """``dpp_layers``: JSON ``{"layers": [...], "num_patterns": P}``; each
    layer's saved weight must be ``[P, Cout, Cin, Kh, Kw]``, or, for a layer
    of ``exported``, its saved kernels ``[P, Cout, Cin, |U|]`` (checked before
    the layers are built, so a wrong P cannot allocate)."""
    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        spec = None
    layers = spec.get("layers") if isinstance(spec, dict) else None
    num_patterns = spec.get("num_patterns") if isinstance(spec, dict) else None
    if (not isinstance(layers, list) or not all(isinstance(n, str) for n in layers)
            or isinstance(num_patterns, bool) or not isinstance(num_patterns, int)):
        raise ValueError('dpp_layers: expected JSON {"layers": [names], "num_patterns": int}')
    unknown = [n for n in exported if n not in layers]
    if unknown:
        raise ValueError(f"dpp_exported: {unknown} are not in dpp_layers")
    for name in layers:
        if name in exported:
            kernels = state.get(f"{name}.kernels")
            if (not isinstance(kernels, Tensor) or kernels.dim() != 4
                    or kernels.shape[0] != num_patterns):
                raise ValueError(f"dpp_layers: {name!r} needs saved kernels "
                                 f"[num_patterns={num_patterns}, Cout, Cin, |U|]")
            continue
        weight = state.get(f"{name}.weight")
        if weight is None or weight.dim() != 5 or weight.shape[0] != num_patterns:
            raise ValueError(f"dpp_layers: {name!r} needs a saved weight "
                             f"[num_patterns={num_patterns}, Cout, Cin, Kh, Kw]")
    return layers, num_patterns


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
    if weight.dim() != module.weight.dim() or min(weight.shape, default=0) < 1:
        raise ValueError(f"layer {name!r}: saved weight of shape {tuple(weight.shape)}, "
                         f"expected {module.weight.dim()} positive sizes")
    if isinstance(module, nn.Conv2d):
        cout, cin_g = weight.shape[:2]
        groups = cout if is_depthwise(module) else module.groups
        return conv_like(module, cin_g * groups, cout, groups)
    if isinstance(module, nn.BatchNorm2d):
        return bn_like(module, weight.shape[0])
    if isinstance(module, nn.Linear):
        return linear_like(module, weight.shape[1], weight.shape[0])
    raise ValueError(f"layer {name!r} ({type(module).__name__}) has a saved weight "
                     f"of shape {tuple(weight.shape)}, expected {tuple(module.weight.shape)}")


def maybe_load_pretrained(model: nn.Module, path: Optional[str]) -> bool:
    if not path:
        return False
    state = state_dict_of(path)
    with naming_file(path):
        resize_to(model, state)
        model.load_state_dict(state)
    return True
