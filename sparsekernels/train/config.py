"""One run's configuration: a flat dataclass whose field names are the seed
code's flags (``--arch``, ``--pr_target``, ``--N``, ...), loadable from YAML or
JSON and overridable from the command line.

``validate()`` checks what can be checked without a model; ``check_model``
checks the rest (N against the layers that will be pruned) so a bad config
fails before the first epoch, never in the middle of training.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

from ..formats.block1xn import MAX_BLOCK_HEIGHT

METHODS = {
    "dense": "no pruning (the 1xN code's --conv_type DenseConv): the baseline",
    "1xn": "1xN blocks by l1 or random criterion (Lin et al.)",
    "stripe": "Filter Skeleton stripe pruning (Meng et al.)",
    "pattern": "PatDNN pattern library + connectivity pruning",
    "dppnet": "DPPNet dynamic pattern convs (Lee et al.); sparsity is learned (--alpha), not set",
    "gsm": "Global Sparse Momentum SGD (Ding et al.)",
    "magnitude": "unstructured global magnitude pruning (Han et al.; Rethinking baseline)",
    "l1_filter": "L1-norm filter pruning to a smaller dense net (Li et al.)",
    "slimming": "network slimming: L1 on BN gamma, global percentile (Liu et al.)",
}
# The 1xN code's --conv_type names, accepted as aliases.
CONV_TYPES = {"DenseConv": ("dense", None), "BlockL1Conv": ("1xn", "l1"),
              "BlockRandomConv": ("1xn", "random")}
INTER_FUNCS = ("one_shot", "linear", "cubic")
LR_POLICIES = ("cos", "step", "const")
# Above ImageNet-21k's 21,841: a bound checked before a classifier is allocated.
MAX_NUM_CLASSES = 100_000


@dataclass
class RunConfig:
    # -- model and data ---------------------------------------------------
    arch: str = "digits_cnn"
    dataset: str = "digits"
    data_path: Optional[str] = None
    num_classes: Optional[int] = None  # None: the data set's
    pretrained_model: Optional[str] = None  # dense checkpoint to prune
    job_dir: str = "runs/digits"
    # -- pruning ------------------------------------------------------------
    method: str = "1xn"
    pr_target: float = 0.5  # target sparsity (fraction of weights, or of channels for filter methods)
    N: int = 4
    criterion: str = "l1"  # 1xn: l1 | random
    rearrange: bool = False  # 1xn: physical filter rearrangement before pruning
    full: bool = False  # also prune the classifier (the 1xN code's --full)
    prune_stem: bool = False
    pad_partial: bool = False  # 1xn: pad Cout % N != 0 instead of rejecting the layer
    exclude: list[str] = field(default_factory=list)  # layer-name patterns kept dense
    # gradual schedule (SparseML-style); one_shot prunes once at start_epoch
    inter_func: str = "one_shot"
    init_sparsity: float = 0.0
    start_epoch: int = 0
    end_epoch: int = 0
    update_frequency: int = 1
    # method knobs, defaults from the seed code
    sr: float = 1e-5  # stripe: L1 strength on the Filter Skeleton
    threshold: float = 1e-2  # stripe: |FS| below this is pruned (when no pr_target schedule)
    stripe_target: bool = True  # stripe: reach pr_target exactly instead of tuning sr/threshold
    num_patterns: int = 8  # pattern: library size per layer
    pattern_entries: int = 4  # pattern: kept positions per 3x3 kernel
    dpp_patterns: int = 4  # dppnet: static kernels per layer
    alpha: float = 1e-4  # dppnet: weight of alpha * sum(exp(-th))
    gsm_momentum: float = 0.98
    slim_s: float = 1e-4  # slimming: L1 strength on BN gamma
    scratch: Optional[str] = None  # l1_filter/slimming: None (fine-tune) | "E" | "B"
    # l1_filter: a named per-layer setting of the Rethinking scripts
    # (filter_prune.L1_PRESETS, e.g. "resnet56-A"); replaces pr_target's ratio
    l1_preset: Optional[str] = None
    # -- training -------------------------------------------------------------
    pretrain_epochs: int = 15  # dense training first when no --pretrained_model
    num_epochs: int = 10  # fine-tuning epochs
    train_batch_size: int = 64
    eval_batch_size: int = 256
    lr: float = 0.01
    pretrain_lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 4e-5  # the 1xN code's value (its help text says 1e-4)
    lr_policy: str = "cos"
    warmup_length: int = 0
    label_smoothing: float = 0.0
    amp: bool = False
    seed: int = 0
    num_workers: int = 0
    resume: bool = True

    # ---- loading ------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        if not isinstance(data, dict):
            raise ValueError(f"expected a mapping of field names, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(repr(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)}; "
                             f"known keys: {sorted(known)}")
        return cls(**data).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        """Read a YAML (.yaml/.yml) or JSON (.json) mapping of fields; every
        problem is a ``ValueError`` naming the file."""
        path = Path(path)
        try:
            return cls.from_dict(_read_mapping(path))
        except ValueError as exc:
            raise ValueError(f"config file {path}: {exc}") from exc

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- checks ---------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Reject what is wrong whatever the model is; returns self."""
        self._check_types()
        self._check_names()
        self._check_pruning()
        self._check_training()
        return self

    def _check_types(self) -> None:
        """Every field has its annotated type: a bool is a real bool (the
        string "no" is truthy), an int is not a float or a bool."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])

    def _check_names(self) -> None:
        from ..data import DATASETS
        from ..models import MODELS

        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; expected one of {sorted(METHODS)}")
        if self.arch not in MODELS:
            raise ValueError(f"arch: unknown model {self.arch!r}; expected one of {sorted(MODELS)}")
        if self.dataset not in DATASETS:
            raise ValueError(f"dataset: unknown {self.dataset!r}; expected one of "
                             f"{sorted(DATASETS)}")
        for name in ("job_dir", "data_path", "pretrained_model"):
            if getattr(self, name) == "":
                raise ValueError(f"{name}: expected a path, got an empty string")
        if self.criterion not in ("l1", "random"):
            raise ValueError(f"criterion: expected 'l1' or 'random', got {self.criterion!r}")
        if self.inter_func not in INTER_FUNCS:
            raise ValueError(f"inter_func: expected one of {INTER_FUNCS}, got {self.inter_func!r}")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"lr_policy: expected one of {LR_POLICIES}, got {self.lr_policy!r}")
        if self.scratch not in (None, "E", "B"):
            raise ValueError(f"scratch: expected None, 'E' or 'B', got {self.scratch!r}")
        if self.l1_preset is not None:
            self._check_l1_preset()

    def _check_l1_preset(self) -> None:
        from ..pruning.filter_prune import L1_PRESET_ARCHS

        if self.l1_preset not in L1_PRESET_ARCHS:
            raise ValueError(f"l1_preset: unknown {self.l1_preset!r}; expected one of "
                             f"{sorted(L1_PRESET_ARCHS)}")
        if self.method != "l1_filter":
            raise ValueError(f"l1_preset: only for method 'l1_filter', got method "
                             f"{self.method!r}")
        arch = L1_PRESET_ARCHS[self.l1_preset]
        if self.arch != arch:
            raise ValueError(f"l1_preset: {self.l1_preset!r} prunes layers of arch {arch!r}, "
                             f"not of arch {self.arch!r}")

    def _check_pruning(self) -> None:
        if not 0.0 <= self.pr_target < 1.0:
            raise ValueError(f"pr_target: expected a sparsity in [0, 1), got {self.pr_target}")
        if self.method != "dense" and self.pr_target == 0.0:
            raise ValueError(f"pr_target: method {self.method!r} needs a sparsity > 0")
        if not 0.0 <= self.init_sparsity <= self.pr_target and self.inter_func != "one_shot":
            raise ValueError(
                f"init_sparsity: expected a value in [0, pr_target={self.pr_target}], "
                f"got {self.init_sparsity}")
        if not 1 <= self.N <= MAX_BLOCK_HEIGHT:
            raise ValueError(f"N: expected an int in [1, {MAX_BLOCK_HEIGHT}], got {self.N}")
        if self.end_epoch < self.start_epoch:
            raise ValueError(
                f"end_epoch: expected >= start_epoch={self.start_epoch}, got {self.end_epoch}")
        if self.inter_func != "one_shot" and self.end_epoch > self.num_epochs:
            raise ValueError(
                f"end_epoch: the schedule must end within num_epochs={self.num_epochs}, "
                f"got {self.end_epoch}")
        if self.scratch and self.method not in ("l1_filter", "slimming"):
            raise ValueError("scratch: only for the filter methods (l1_filter, slimming)")
        for name in ("update_frequency", "num_patterns", "pattern_entries", "dpp_patterns"):
            _at_least(name, getattr(self, name), 1)
        for name in ("sr", "threshold", "alpha", "slim_s"):
            _at_least(name, getattr(self, name), 0)
        if not 0.0 <= self.gsm_momentum < 1.0:
            raise ValueError(f"gsm_momentum: expected [0, 1), got {self.gsm_momentum}")

    def _check_training(self) -> None:
        if self.num_classes is not None and not 1 <= self.num_classes <= MAX_NUM_CLASSES:
            raise ValueError(f"num_classes: expected an int in [1, {MAX_NUM_CLASSES}] "
                             f"(or null: the data set's), got {self.num_classes}")
        for name in ("num_epochs", "train_batch_size", "eval_batch_size"):
            _at_least(name, getattr(self, name), 1)
        for name in ("pretrain_epochs", "warmup_length", "start_epoch", "num_workers", "seed"):
            _at_least(name, getattr(self, name), 0)
        # The phases' Trainers check these too, but the fine-tuning one is
        # built after dense training: check them before any epoch runs.
        if self.warmup_length >= self.num_epochs:
            raise ValueError(f"warmup_length: expected < num_epochs={self.num_epochs}, "
                             f"got {self.warmup_length}")
        if self.pretrained_model is None and self.pretrain_epochs <= self.warmup_length:
            raise ValueError(
                f"pretrain_epochs: dense training comes first when no pretrained_model is "
                f"given: expected > warmup_length={self.warmup_length}, got {self.pretrain_epochs}")
        for name in ("lr", "pretrain_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a learning rate > 0, got {getattr(self, name)}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum: expected [0, 1), got {self.momentum}")
        _at_least("weight_decay", self.weight_decay, 0)
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected [0, 1), got {self.label_smoothing}")


# Fields a job folder may be resumed with changed, and why none of them
# changes what the run computes or what its result says it is.
RESUMABLE_CHANGES = {
    "resume": "whether to resume is the question, not a setting of the run",
    "job_dir": "the folder itself, which may be spelled another way",
    "num_workers": "data-loading processes: speed, not the data or the model",
    "eval_batch_size": "evaluation batching: the same per-image predictions",
}


def changed_fields(recorded: RunConfig, requested: RunConfig) -> list[str]:
    """The result-changing fields in which ``requested`` differs from
    ``recorded`` (give both :func:`with_absolute_paths`)."""
    old, new = recorded.to_dict(), requested.to_dict()
    return [name for name in old if name not in RESUMABLE_CHANGES and old[name] != new[name]]


def with_absolute_paths(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its paths absolute: what a job folder records, so that a
    relative path given from another working directory counts as changed."""
    return cfg.replace(**{name: os.path.abspath(getattr(cfg, name))
                          for name in ("job_dir", "data_path", "pretrained_model")
                          if getattr(cfg, name) is not None})


def _read_mapping(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError("does not exist" if not path.exists() else "is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".yaml", ".yml", ".json"):
        raise ValueError("expected a .yaml, .yml or .json file")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read as text ({exc})") from exc
    import yaml

    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if suffix == ".json" else "YAML"
        raise ValueError(f"not valid {kind}: {exc}") from exc
    if data is None:  # an empty file: all defaults
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def _check_type(name: str, value: Any, kind: Any) -> None:
    if typing.get_origin(kind) is typing.Union:  # Optional[X]
        if value is None:
            return
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    if typing.get_origin(kind) is list:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return
        raise ValueError(f"{name}: expected a list of strings, got {value!r}")
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                          and math.isfinite(v)),
        str: lambda v: isinstance(v, str),
    }[kind]
    if ok(value):
        return
    hint = ""
    if kind is float and isinstance(value, str):
        hint = " (YAML reads 1e-3 as text: write 1.0e-3)"
    raise ValueError(f"{name}: expected {_TYPE_NAMES[kind]}, got {value!r} "
                     f"({type(value).__name__}){hint}")


_TYPE_NAMES = {bool: "true or false", int: "an int", float: "a finite number", str: "a string"}


def _at_least(name: str, value, low) -> None:
    if value < low:
        raise ValueError(f"{name}: expected a value >= {low}, got {value}")
