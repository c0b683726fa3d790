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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Optional

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config: unknown key(s) {unknown}; known keys: {sorted(known)}")
        return cls(**data).validate()

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ValueError(f"config file {path}: expected a .yaml, .yml or .json file")
        if not isinstance(data, dict):
            raise ValueError(f"config file {path}: expected a mapping at the top level")
        return cls.from_dict(data)

    def replace(self, **changes) -> "RunConfig":
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    # ---- checks ---------------------------------------------------------------
    def validate(self) -> "RunConfig":
        """Reject what is wrong whatever the model is; returns self."""
        if self.method not in METHODS:
            raise ValueError(f"method: unknown {self.method!r}; expected one of {sorted(METHODS)}")
        if not 0.0 <= self.pr_target < 1.0:
            raise ValueError(f"pr_target: expected a sparsity in [0, 1), got {self.pr_target}")
        if self.method != "dense" and self.pr_target == 0.0:
            raise ValueError(f"pr_target: method {self.method!r} needs a sparsity > 0")
        if not 0.0 <= self.init_sparsity <= self.pr_target and self.inter_func != "one_shot":
            raise ValueError(
                f"init_sparsity: expected a value in [0, pr_target={self.pr_target}], "
                f"got {self.init_sparsity}")
        if self.N < 1:
            raise ValueError(f"N: expected an int >= 1, got {self.N}")
        if self.criterion not in ("l1", "random"):
            raise ValueError(f"criterion: expected 'l1' or 'random', got {self.criterion!r}")
        if self.inter_func not in INTER_FUNCS:
            raise ValueError(f"inter_func: expected one of {INTER_FUNCS}, got {self.inter_func!r}")
        if self.end_epoch < self.start_epoch:
            raise ValueError(
                f"end_epoch: expected >= start_epoch={self.start_epoch}, got {self.end_epoch}")
        if self.inter_func != "one_shot" and self.end_epoch > self.num_epochs:
            raise ValueError(
                f"end_epoch: the schedule must end within num_epochs={self.num_epochs}, "
                f"got {self.end_epoch}")
        if self.update_frequency < 1:
            raise ValueError(f"update_frequency: expected an int >= 1, got {self.update_frequency}")
        if self.lr_policy not in LR_POLICIES:
            raise ValueError(f"lr_policy: expected one of {LR_POLICIES}, got {self.lr_policy!r}")
        if self.scratch not in (None, "E", "B"):
            raise ValueError(f"scratch: expected None, 'E' or 'B', got {self.scratch!r}")
        if self.scratch and self.method not in ("l1_filter", "slimming"):
            raise ValueError("scratch: only for the filter methods (l1_filter, slimming)")
        for name in ("num_epochs", "train_batch_size", "eval_batch_size", "num_patterns",
                     "pattern_entries", "dpp_patterns"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an int >= 1, got {getattr(self, name)}")
        for name in ("pretrain_epochs", "warmup_length", "start_epoch", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected an int >= 0, got {getattr(self, name)}")
        for name in ("lr", "pretrain_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a learning rate > 0, got {getattr(self, name)}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: expected [0, 1), got {self.label_smoothing}")
        return self
