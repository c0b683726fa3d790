"""``finetune`` and ``evaluate`` on saved models.

``finetune`` continues training a pruned model with its kept masks fixed
(a ``FakeSparsity`` parametrization whose mask is checkpointed: pruned
weights stay exactly zero), the seed code's ``--pruned_model`` path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..data import get_datasets
from ..pruning.base import SavedMask
from .artifacts import load_model, read_record, save_model
from .config import RunConfig
from .distributed import barrier, is_main
from .export import load_exported
from .pipeline import check_fits, check_job_dir, make_trainer, start_job
from .metrics import evaluate


def _masked(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Fix the (``load_model``-checked) masks as parametrizations."""
    for name, mask in masks.items():
        parametrize.register_parametrization(model.get_submodule(name), "weight",
                                             SavedMask(mask.float()))


def finetune(cfg: RunConfig, pruned_path: str | Path, *, progress: bool = True) -> dict[str, Any]:
    cfg.validate()
    job = check_job_dir(cfg, "finetune", pruned_model=str(pruned_path))
    model, record = load_model(pruned_path)
    masks = record["masks"]
    train_set, test_set, info = get_datasets(cfg.dataset, cfg.data_path, seed=cfg.seed)
    check_fits(model, info, cfg.dataset, f"model file {pruned_path}")
    _masked(model, masks)
    job_dir = start_job(cfg, job)
    metrics = make_trainer(cfg, model, train_set, test_set, job_dir / "finetune",
                           epochs=cfg.num_epochs, lr=cfg.lr, progress=progress).fit()
    for name in masks:
        parametrize.remove_parametrizations(model.get_submodule(name), "weight")
    # Carry the method's extras (config, DPP layers, pattern library) along.
    extra = {k: v for k, v in record.items()
             if k not in ("format", "arch", "num_classes", "state_dict", "masks")}
    if is_main():
        save_model(job_dir / "pruned.pt", model, record["arch"], record["num_classes"],
                   masks=masks, **extra)
    barrier()
    return {"test": metrics, "out": str(job_dir / "pruned.pt")}


def evaluate_file(path: str | Path, dataset: str, data_path: Optional[str] = None,
                  batch_size: int = 256, seed: int = 0) -> dict[str, Any]:
    """Top-1/top-5 of a saved (``pruned.pt``/``dense.pt``) or exported model."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"eval_batch_size: expected an int >= 1, got {batch_size!r}")
    record = read_record(path)
    model = load_exported(path) if "export_format" in record else load_model(path)[0]
    _, test_set, info = get_datasets(dataset, data_path, seed=seed)
    check_fits(model, info, dataset, f"model file {path}")
    loader = torch.utils.data.DataLoader(test_set, batch_size=batch_size)
    return {"model": str(path), "test": evaluate(model, loader)}
