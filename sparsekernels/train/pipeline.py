"""prune -> fine-tune -> finalize -> (re-train), each phase a resumable
``Trainer`` run in its own folder under ``job_dir``:

    job_dir/dense/     dense training when no --pretrained_model is given
    job_dir/finetune/  the method's pruning + fine-tuning epochs
    job_dir/retrain/   filter methods: the narrower net, fine-tuned or from scratch
    job_dir/pruned.pt  the final model (dense-equivalent weights + kept masks)
    job_dir/result.json  accuracy, sparsity, FLOPs and time of every phase

A phase that finished is not run again: re-running the same command after an
interruption continues where it stopped.
"""
from __future__ import annotations

import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..data import get_datasets
from ..flops import count_flops
from ..models import get_model
from ..pruning.scratch import reinitialize, scratch_epochs
from .artifacts import maybe_load_pretrained, save_model
from .config import RunConfig
from .distributed import barrier, is_main
from .loop import Trainer
from .methods import make_method

log = logging.getLogger("sparsekernels")


def build_model(cfg: RunConfig, num_classes: int) -> nn.Module:
    torch.manual_seed(cfg.seed)
    return get_model(cfg.arch, num_classes=num_classes)


def check_model(cfg: RunConfig, model: nn.Module) -> None:
    """Let the method look at the model's layers on a throwaway copy, so a
    config that cannot apply (N not dividing a pruned layer, a target below
    what the method allows) fails before the dense phase, not after it."""
    import copy

    make_method(cfg).prepare(copy.deepcopy(model))


def make_trainer(cfg: RunConfig, model: nn.Module, train_set, test_set, job_dir: Path, *,
                 epochs: int, lr: float, hooks=(), optimizer_factory=None, device=None,
                 progress: bool = True) -> Trainer:
    """A ``Trainer`` with ``cfg``'s optimisation settings (every phase, and
    ``finetune``, train through this)."""
    return Trainer(
        model, train_set, test_set, epochs=epochs, batch_size=cfg.train_batch_size,
        eval_batch_size=cfg.eval_batch_size, lr=lr, momentum=cfg.momentum,
        nesterov=cfg.nesterov, weight_decay=cfg.weight_decay,
        warmup_epochs=cfg.warmup_length, lr_policy=cfg.lr_policy,
        label_smoothing=cfg.label_smoothing, amp=cfg.amp, seed=cfg.seed, job_dir=job_dir,
        resume=cfg.resume, hooks=list(hooks), optimizer_factory=optimizer_factory,
        num_workers=cfg.num_workers, device=device, progress=progress,
    )


def run(cfg: RunConfig, *, device: Optional[torch.device] = None,
        progress: bool = True) -> dict[str, Any]:
    """Run the whole pipeline for ``cfg``; returns (and writes) the result record."""
    cfg.validate()
    job_dir = Path(cfg.job_dir)
    data = get_datasets(cfg.dataset, cfg.data_path, seed=cfg.seed)
    info = data[2]
    num_classes = cfg.num_classes or info.num_classes
    model = build_model(cfg, num_classes)
    result: dict[str, Any] = {"config": cfg.to_dict(), "phases": {}}
    flops_dense = count_flops(model, info.input_shape)
    train = partial(make_trainer, cfg, model, data[0], data[1], device=device, progress=progress)

    if not maybe_load_pretrained(model, cfg.pretrained_model):
        if cfg.method != "dense":  # with a pretrained model, prepare() below checks at once
            check_model(cfg, model)
        result["phases"]["dense"] = _phase(
            train(job_dir / "dense", epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr))
        if is_main():
            save_model(job_dir / "dense.pt", model, cfg.arch, num_classes)
    if cfg.method == "dense":
        metrics = _evaluate(cfg, model, data, device)
        return _finish(cfg, job_dir, model, make_method(cfg), metrics, result,
                       flops_dense, info, num_classes)

    method = make_method(cfg)
    model = method.prepare(model)
    result["phases"]["finetune"] = _phase(
        train(job_dir / "finetune", epochs=cfg.num_epochs, lr=cfg.lr, hooks=[method],
              optimizer_factory=method.optimizer_factory()))
    model = method.finalize(model)
    if method.retrain:
        epochs = cfg.num_epochs
        if cfg.scratch:
            flops_pruned = count_flops(model, info.input_shape)
            epochs = scratch_epochs(cfg.num_epochs, flops_dense, flops_pruned, mode=cfg.scratch)
            reinitialize(model, cfg.seed)
        result["phases"]["retrain"] = _phase(make_trainer(
            cfg, model, data[0], data[1], job_dir / "retrain", epochs=epochs,
            lr=cfg.pretrain_lr if cfg.scratch else cfg.lr, device=device, progress=progress))
    metrics = _evaluate(cfg, model, data, device)
    return _finish(cfg, job_dir, model, method, metrics, result, flops_dense, info, num_classes)


def _phase(trainer: Trainer) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = trainer.fit()
    return {**metrics, "seconds": round(time.perf_counter() - start, 2)}


def _evaluate(cfg, model, data, device):
    from .metrics import evaluate

    loader = torch.utils.data.DataLoader(data[1], batch_size=cfg.eval_batch_size)
    return evaluate(model, loader, device=device)


def _finish(cfg, job_dir, model, method, metrics, result, flops_dense, info, num_classes):
    masks = method.masks(model)
    result.update(
        test=metrics,
        sparsity=method.sparsity(model),
        flops_dense=flops_dense,
        flops=count_flops(model, info.input_shape),
        params=sum(p.numel() for p in model.parameters()),
        nonzero_params=sum(int((p != 0).sum()) for p in model.parameters()),
    )
    if is_main():  # under torchrun every rank holds the same model: one writes
        save_model(job_dir / "pruned.pt", model, cfg.arch, num_classes,
                   method=cfg.method, config=json.dumps(cfg.to_dict()), masks=masks,
                   **method.saved_extras())
        (job_dir / "result.json").write_text(json.dumps(result, indent=2, default=str))
    barrier()
    log.info("%s: top1 %.2f%%, sparsity %s", cfg.method, 100 * metrics["top1"], result["sparsity"])
    return result
