"""``finetune`` and ``evaluate`` on saved models.

``finetune`` continues training a pruned model with its kept masks fixed
(a ``FakeSparsity`` parametrization whose mask is checkpointed: pruned
weights stay exactly zero), the seed code's ``--pruned_model`` path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data import get_datasets
from ..pruning.base import SavedMask
from .artifacts import load_model, read_record, save_model
from .config import RunConfig
from .export import load_exported
from .loop import Trainer
from .metrics import evaluate


def _masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    for name, mask in masks.items():
        module = model.get_submodule(name)
        if tuple(mask.shape) != tuple(module.weight.shape):
            raise ValueError(f"pruned model: mask of {name!r} has shape {tuple(mask.shape)}, "
                             f"its weight {tuple(module.weight.shape)}")
        parametrize.register_parametrization(module, "weight", SavedMask(mask.float()))


def finetune(cfg: RunConfig, pruned_path: str | Path, *, progress: bool = True) -> dict[str, Any]:
    model, record = load_model(pruned_path)
    masks = record.get("masks", {})
    _masked(model, masks)
    train_set, test_set, _ = get_datasets(cfg.dataset, cfg.data_path, seed=cfg.seed)
    job_dir = Path(cfg.job_dir)
    metrics = Trainer(
        model, train_set, test_set, epochs=cfg.num_epochs, batch_size=cfg.train_batch_size,
        eval_batch_size=cfg.eval_batch_size, lr=cfg.lr, momentum=cfg.momentum,
        nesterov=cfg.nesterov, weight_decay=cfg.weight_decay, warmup_epochs=cfg.warmup_length,
        lr_policy=cfg.lr_policy, label_smoothing=cfg.label_smoothing, amp=cfg.amp,
        seed=cfg.seed, job_dir=job_dir / "finetune", resume=cfg.resume,
        num_workers=cfg.num_workers, progress=progress,
    ).fit()
    for name in masks:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight")
    extra = {k: record[k] for k in ("method", "config") if k in record}
    save_model(job_dir / "pruned.pt", model, record["arch"], record["num_classes"],
               masks=masks, **extra)
    return {"test": metrics, "out": str(job_dir / "pruned.pt")}


def evaluate_file(path: str | Path, dataset: str, data_path: Optional[str] = None,
                  batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Top-1/top-5 of a saved (``pruned.pt``/``dense.pt``) or exported model."""
    record = read_record(path)
    model = load_exported(path) if "export_format" in record else load_model(path)[0]
    _, test_set, _ = get_datasets(dataset, data_path, seed=seed)
    loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size)
    return {"model": str(path), "test": evaluate(model, loader)}
