"""``export``: turn a pruned model into one that runs on the sparse kernels.

The record's method says which masked layers become which kind's sparse
module (``Method.sparse_layers`` -> ``{layer: LayerSpec(kind, mask, params)}``,
the kind a ``kinds.KINDS`` slug): 1xN layers become ``Block1xNConv2d``, stripe
layers ``StripeConv2d``, pattern layers ``PatternConv2d``, each built from its
kept mask so the format holds exactly what training kept (a pattern layer's
library is the distinct kept kernel masks, so the saved ``patterns`` entry of
a converted layer is dropped). Methods without a kind (magnitude, ...) stay
dense convs with zeros; their masks travel in the file.

Stripe (as the seed code's ``prune_out``/``prune_in``): filters left without
any stripe are removed first, with their BN entries and the next layers'
input channels (``pruning.stripe.remove_dead_filters``), wherever that leaves
the output unchanged, so the exported net is physically narrower.

DPPNet: each ``DPPConv2d`` becomes a ``DynamicPatternConv2d`` (the same
outputs, computed on the layer's static support U: ``kernels[P, Cout, Cin,
|U|]`` and ``taps[|U|]`` saved instead of the 5-D weight); the file's
``dpp_exported`` (JSON list) names them, ``dpp_layers`` travels along, and
``load_exported`` checks each layer's saved ``taps`` and ``kernels`` before
building it.

The file's ``sparse_layers`` is JSON ``{layer: {"kind": label, **params}}``
(``{"kind": "1xN", "n": 4}``, ``{"kind": "stripe"}``); each sparse layer's
geometry is its saved ``meta``. An ONNX file of the dense-equivalent model is
offered too, as the 1xN seed code does.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple, Optional

import torch
from torch import Tensor, nn

from ..flops import count_flops
from ..kinds import KINDS, KindSpec, by_label
from ..models import MODELS
from ..nn.base import SparseConv2d
from ..nn.dynamic_pattern import DynamicPatternConv2d, check_state
from ..nn.replace import replace_module
from ..optional import require
from ..pruning.dppnet import DPPConv2d
from ..pruning.stripe import remove_dead_filters
from .artifacts import (
    build_model_of, check_patterns, checked_masks, config_of, dpp_exported, layer_of, load_model,
    naming_file, output_width, read_record, save_model,
)
from .config import RunConfig
from .methods import METHOD_CLASSES, LayerSpec, Method

log = logging.getLogger("sparsekernels")
FORMAT = "sparsekernels.export/1"


def to_sparse_modules(model: nn.Module, layers: dict[str, LayerSpec],
                      backend: str = "auto") -> list[str]:
    """Swap each ``nn.Conv2d`` of ``layers`` for its kind's sparse module
    holding exactly its kept weights; returns the names converted. Others
    (not a plain Conv2d) are logged and stay dense."""
    converted = []
    for name, spec in layers.items():
        module = model.get_submodule(name)
        if type(module) is not nn.Conv2d:
            log.info("export: %s (%s) stays dense: no sparse module for it yet",
                     name, type(module).__name__)
            continue
        replace_module(model, name, KINDS[spec.kind].module.from_dense(
            module, mask=spec.mask.to(module.weight.device), backend=backend, **spec.params))
        converted.append(name)
    return converted


# Record entries export rewrites; the others (DPP layers) travel along
# unchanged.
_REWRITTEN = ("format", "arch", "num_classes", "state_dict", "masks", "method", "config",
              "export_format", "sparse_layers", "removed_filters", "dpp_exported", "patterns")


def method_of(record: dict[str, Any], cfg: Optional[RunConfig], what: str) -> Method:
    """The record's method (not prepared: it only answers what its layers are)."""
    name = record.get("method", "dense")
    cls = METHOD_CLASSES[name]
    if cls.kind is not None and cfg is None:
        raise ValueError(f"{what}: method {name!r} without the config that holds its settings")
    return cls(cfg)


class Exported(NamedTuple):
    """A pruned model converted as ``export`` saves it."""

    model: nn.Module  # sparse modules in place of the kind's layers
    sparse: dict[str, dict]  # {layer: {"kind": label, **params}}
    masks: dict[str, Tensor]  # masked layers left dense
    removed: dict[str, list[int]]  # filters removed per layer
    kept_dead: dict[str, int]  # dead filters kept (removing them would change the output)
    dpp: list[str]  # DPP layers now on their static support


def convert(model: nn.Module, record: dict[str, Any], what: str,
            backend: str = "auto") -> Exported:
    """``load_model``'s pruned model and record, converted in place into the
    model ``export`` saves. ``what`` names the file in errors."""
    method = method_of(record, config_of(record), what)
    masks = record["masks"]
    removed, kept_dead = {}, {}
    if method.removes_dead_filters:
        layers = list(method.sparse_layers(model, masks))
        masks, removed, kept_dead = remove_dead_filters(
            model, masks, MODELS[record["arch"]].input_shape, layers)
    layers = method.sparse_layers(model, masks)
    sparse = {}
    for name in to_sparse_modules(model, layers, backend):
        spec = layers[name]
        sparse[name] = {"kind": KINDS[spec.kind].label, **spec.params}
    masks = {k: v for k, v in masks.items() if k not in sparse}
    return Exported(model, sparse, masks, removed, kept_dead, dpp_to_support(model))


def export(pruned_path: str | Path, out_path: str | Path,
           onnx_path: Optional[str | Path] = None, *, latency: bool = False) -> dict[str, Any]:
    """Read ``pruned.pt``, write the sparse model to ``out_path`` (and an ONNX
    file of the dense-equivalent model to ``onnx_path``); returns a summary,
    with :func:`speed_report`'s figures (``latency`` measured or not)."""
    _check_distinct(pruned_model=pruned_path, out=out_path, export_onnx=onnx_path)
    model, record = load_model(pruned_path)
    if onnx_path:
        export_onnx(model, record["arch"], onnx_path)
    done = convert(model, record, f"model file {pruned_path}")
    # A converted layer's pattern library lives in its format now.
    patterns = {k: v for k, v in record.get("patterns", {}).items() if k not in done.sparse}
    extra = {k: v for k, v in record.items() if k not in _REWRITTEN}
    if "config" in record:
        extra["config"] = record["config"]
    save_model(out_path, done.model, record["arch"], record["num_classes"], export_format=FORMAT,
               method=record.get("method", "dense"), sparse_layers=json.dumps(done.sparse),
               masks=done.masks, removed_filters=json.dumps(done.removed),
               dpp_exported=json.dumps(done.dpp),
               **({"patterns": patterns} if "patterns" in record else {}), **extra)
    summary = {"out": str(out_path), "method": record.get("method", "dense"),
               "sparse_layers": sorted(done.sparse), "dense_masked_layers": sorted(done.masks),
               "dpp_layers": {name: done.model.get_submodule(name).num_taps
                              for name in done.dpp},
               "removed_filters": {k: len(v) for k, v in sorted(done.removed.items())},
               "dead_filters_kept": dict(sorted(done.kept_dead.items())),
               "onnx": str(onnx_path) if onnx_path else None}
    log.info("export: %s", summary)
    summary.update(speed_report(done.model, record, latency=latency))
    return summary


def speed_report(sparse: nn.Module, record: dict[str, Any], *, latency: bool) -> dict[str, Any]:
    """What the pruning bought, for ``record``'s exported model ``sparse``
    against its unpruned architecture: sparsity per kind, FLOPs and (with
    ``latency``) the measured latencies at batch 1 and the config's
    evaluation batch (``bench.latency``)."""
    from ..bench.latency import dense_vs_sparse, unpruned

    dense = unpruned(record["arch"], record["num_classes"])
    input_shape = MODELS[record["arch"]].input_shape
    flops_dense, flops = count_flops(dense, input_shape), count_flops(sparse, input_shape)
    report = {"sparsity_by_kind": sparsity_by_kind(sparse), "flops_dense": flops_dense,
              "flops": flops, "flop_reduction": flops_dense / flops, "latency": None}
    if latency:
        cfg = config_of(record) or RunConfig()
        report["latency"] = dense_vs_sparse(dense, sparse, input_shape,
                                            [1, cfg.eval_batch_size])
    return report


def sparsity_by_kind(model: nn.Module) -> dict[str, dict[str, Any]]:
    """Per kind of weighted layer (a sparse kind's label, ``"dynamic pattern"``
    or ``"dense"`` for plain convs and linears, masked ones included): how
    many layers, their dense-equivalent weights and the fraction that is zero."""
    counts: dict[str, list[int]] = {}
    dpp = ()  # name prefixes of DPP layers: their attention is part of the layer
    for name, module in model.named_modules():
        if name.startswith(dpp):
            continue
        if isinstance(module, SparseConv2d):
            label = next(k.label for k in KINDS.values() if isinstance(module, k.module))
            weight = module.to_dense().weight
        elif isinstance(module, DynamicPatternConv2d):
            label, weight = "dynamic pattern", module.dense_kernels()
            dpp += (f"{name}.",)
        elif isinstance(module, (nn.Conv2d, nn.Linear)):
            label, weight = "dense", module.weight
        else:
            continue
        layers, weights, zeros = counts.setdefault(label, [0, 0, 0])
        counts[label] = [layers + 1, weights + weight.numel(),
                         zeros + weight.numel() - int(torch.count_nonzero(weight))]
    return {label: {"layers": layers, "weights": weights, "sparsity": zeros / weights}
            for label, (layers, weights, zeros) in counts.items()}


def dpp_to_support(model: nn.Module) -> list[str]:
    """Swap each ``DPPConv2d`` for a ``DynamicPatternConv2d`` (the same
    outputs, computed on the layer's static support); returns their names."""
    names = [name for name, m in model.named_modules() if isinstance(m, DPPConv2d)]
    for name in names:
        replace_module(model, name, DynamicPatternConv2d.from_dpp(model.get_submodule(name)))
    return names


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


def load_exported(path: str | Path, backend: str = "auto") -> nn.Module:
    """Rebuild an exported model, its sparse layers with ``backend``. Each
    sparse layer is built with the geometry of its saved ``meta`` (bounded by
    the arch's conv: filters may have been removed, never added) and
    validated by its module's ``load_state_dict`` before any kernel runs.
    Every problem with the file is a ``ValueError`` naming it."""
    record = read_record(path)
    if record.get("export_format") != FORMAT:
        raise ValueError(f"exported model {path}: expected export_format {FORMAT!r}, "
                         f"got {record.get('export_format')!r}")
    with naming_file(path, "exported model"):
        model = build_model_of(record)
        state = record["state_dict"]
        for name, (kind, params) in sparse_layers_of(record).items():
            conv = layer_of(model, name, "sparse_layers")
            if type(conv) is not nn.Conv2d:
                raise ValueError(f"sparse_layers: {name!r} is a {type(conv).__name__}, "
                                 f"not a Conv2d in {record['arch']}")
            cin, cout = _saved_width(kind, params, conv, state, name)
            replace_module(model, name, kind.module(
                cin, cout, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                conv.groups, conv.bias is not None, conv.padding_mode, backend=backend,
                **params))
        for name in dpp_exported(record):
            _dpp_from_state(model, name, state)
        model.load_state_dict(state)
        checked_masks(model, record)
        check_patterns(model, record.get("patterns", {}))
        output_width(model, MODELS[record["arch"]].input_shape)
    return model


def _dpp_from_state(model: nn.Module, name: str, state: dict[str, Tensor]) -> None:
    """Replace DPP layer ``name`` (built as a DPPConv2d from ``dpp_layers``)
    by a DynamicPatternConv2d of its saved support, after checking the saved
    ``taps`` and ``kernels`` against the layer."""
    layer = model.get_submodule(name)
    if not isinstance(layer, DPPConv2d):
        raise ValueError(f"dpp_exported: {name!r} is a {type(layer).__name__}, not a DPP layer")
    num_taps = check_state(state, f"{name}.", layer.num_patterns, layer.out_channels,
                           layer.in_channels, layer.kernel_size)
    replace_module(model, name, DynamicPatternConv2d(
        layer.in_channels, layer.out_channels, layer.kernel_size, num_taps, layer.num_patterns,
        layer.stride, layer.padding, layer.dilation, layer.attention.temperature,
        layer.bias is not None))


def _saved_width(kind: KindSpec, params: dict[str, int], conv: nn.Conv2d,
                 state: dict[str, Tensor], name: str) -> tuple[int, int]:
    """(in_channels, out_channels) of sparse layer ``name`` from its saved
    ``meta`` (``[Cout, Cin/g, Kh, Kw, *params, groups]``); the conv's own
    when none is saved (``load_state_dict`` then refuses what does not fit)."""
    meta = state.get(f"{name}.meta")
    if meta is None:
        return conv.in_channels, conv.out_channels
    keys = kind.format.meta_keys()
    if (not isinstance(meta, Tensor) or meta.dim() != 1 or meta.numel() != len(keys)
            or meta.is_floating_point() or meta.dtype == torch.bool or meta.is_complex()):
        raise ValueError(f"state_dict: {name}.meta: expected {len(keys)} ints {list(keys)} "
                         f"of a {kind.label} layer")
    saved = dict(zip(keys, meta.tolist()))
    cout, cin_g, groups = saved["cout"], saved["cin_per_group"], saved["groups"]
    expected = {"kh": conv.kernel_size[0], "kw": conv.kernel_size[1], "groups": conv.groups,
                **params}
    wrong = {k: saved[k] for k, v in expected.items() if saved[k] != v}
    if wrong or not 1 <= cout <= conv.out_channels or not (
            1 <= cin_g * groups <= conv.in_channels):
        raise ValueError(
            f"state_dict: {name}.meta: {saved} does not fit {name} (kernel "
            f"{tuple(conv.kernel_size)}, groups {conv.groups}, at most {conv.out_channels} "
            f"filters of {conv.in_channels // conv.groups} input channels, params {params})")
    return cin_g * groups, cout


def sparse_layers_of(record: dict[str, Any]) -> dict[str, tuple[KindSpec, dict[str, int]]]:
    """``sparse_layers``: JSON ``{layer: {"kind": label, **params}}``. Each
    entry must be of the kind the record's method exports, with exactly that
    kind's parameters, equal to the config's (export writes no other), so a
    hand-edited N cannot make a layer's padded block rows allocate without
    bound. Returns ``{layer: (kind, params)}``."""
    text = record.get("sparse_layers")
    try:
        spec = json.loads(text) if isinstance(text, str) else None
    except json.JSONDecodeError:
        spec = None
    if not isinstance(spec, dict):
        raise ValueError('sparse_layers: expected JSON {"layer": {"kind": "1xN", "n": N}} or '
                         '{"layer": {"kind": "stripe"}}')
    method = method_of(record, config_of(record), "sparse_layers") if spec else None
    layers = {}
    for name, entry in spec.items():
        if not isinstance(entry, dict):
            raise ValueError(f"sparse_layers: {name!r}: expected {{'kind': label, ...its "
                             f"parameters}}, got {entry!r}")
        try:
            kind = by_label(entry.get("kind"))
        except ValueError as exc:
            raise ValueError(f"sparse_layers: {name!r}: {exc}") from exc
        params = {k: v for k, v in entry.items() if k != "kind"}
        if sorted(params) != sorted(kind.format.PARAMS):
            raise ValueError(f"sparse_layers: {name!r}: a {kind.label} layer takes the "
                             f"parameters {list(kind.format.PARAMS)}, got {sorted(params)}")
        if method.kind != kind.slug:
            made = KINDS[method.kind].label if method.kind else "no sparse layers"
            raise ValueError(f"sparse_layers: {name!r}: kind {kind.label!r}, but method "
                             f"{record.get('method', 'dense')!r} exports {made!r}")
        for key, want in method.kind_params().items():
            got = params[key]
            if isinstance(got, bool) or not isinstance(got, int) or got != want:
                raise ValueError(f"sparse_layers: {name!r}: {key}={got!r} is not the config's "
                                 f"{key}={want!r}")
        layers[name] = kind, params
    return layers


def export_onnx(model: nn.Module, arch: str, path: str | Path) -> Path:
    """ONNX of the dense-equivalent model (zeros kept as weights)."""
    require("onnx", "onnx")  # torch's exporter needs it: say which extra installs it
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.randn(1, *MODELS[arch].input_shape)
    model.eval()
    torch.onnx.export(model, (example,), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}},
                      dynamo=False)
    return path
