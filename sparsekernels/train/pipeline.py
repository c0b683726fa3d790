"""prune -> fine-tune -> finalize -> (re-train), each phase a resumable
``Trainer`` run in its own folder under ``job_dir``:

    job_dir/dense/     dense training when no --pretrained_model is given
    job_dir/finetune/  the method's pruning + fine-tuning epochs
    job_dir/retrain/   filter methods: the narrower net, fine-tuned or from scratch
    job_dir/pruned.pt  the final model (dense-equivalent weights + kept masks)
    job_dir/result.json  accuracy, sparsity, FLOPs and time of every phase (and, with
                         latency=True, ``exported``: export.speed_report of sparse.pt-to-be)
    job_dir/config.json  the command and settings the folder's run was started with

A phase that finished is not run again: re-running the same command after an
interruption continues where it stopped. Re-running it with settings that
change the result (``config.RESUMABLE_CHANGES`` lists those that do not) is
refused: the finished phases would be reused and labelled with the new ones.
``--no-resume`` starts over, removing the old run's outputs first.
"""
from __future__ import annotations

import json
import logging
import os
import time
from functools import partial
from pathlib import Path
from typing import Any, Optional

import torch
from torch import nn

from ..atomic_file import atomic_write
from ..data import get_datasets
from ..flops import count_flops
from ..models import get_model
from ..pruning.scratch import reinitialize, scratch_epochs
from .artifacts import load_model, maybe_load_pretrained, output_width, save_model
from .config import RESUMABLE_CHANGES, RunConfig, changed_fields, with_absolute_paths
from .distributed import barrier, is_main
from .export import convert, speed_report
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
        progress: bool = True, latency: bool = False) -> dict[str, Any]:
    """Run the whole pipeline for ``cfg``; returns (and writes) the result
    record, with ``latency``: what the exported model's speed is
    (``export.speed_report``, measured on the device the model trained on)."""
    cfg.validate()
    job = check_job_dir(cfg, "prune")
    data = get_datasets(cfg.dataset, cfg.data_path, seed=cfg.seed)
    info = data[2]
    num_classes = classes_for(cfg, info)
    model = build_model(cfg, num_classes)
    pretrained = maybe_load_pretrained(model, cfg.pretrained_model)
    check_fits(model, info, cfg.dataset, f"arch {cfg.arch!r}")
    result: dict[str, Any] = {"config": cfg.to_dict(), "phases": {}}
    flops_dense = count_flops(model, info.input_shape)
    train = partial(make_trainer, cfg, model, data[0], data[1], device=device, progress=progress)
    if not pretrained and cfg.method != "dense":  # with a pretrained model, prepare() checks
        check_model(cfg, model)
    job_dir = start_job(cfg, job)

    if not pretrained:
        result["phases"]["dense"] = _phase(
            train(job_dir / "dense", epochs=cfg.pretrain_epochs, lr=cfg.pretrain_lr))
        if is_main():
            save_model(job_dir / "dense.pt", model, cfg.arch, num_classes)
    if cfg.method == "dense":
        metrics = _evaluate(cfg, model, data, device)
        return _finish(cfg, job_dir, model, make_method(cfg), metrics, result,
                       flops_dense, info, num_classes, latency)

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
    return _finish(cfg, job_dir, model, method, metrics, result, flops_dense, info, num_classes,
                   latency)


def classes_for(cfg: RunConfig, info) -> int:
    """``cfg.num_classes``, or the data set's; fewer outputs than the data
    set has classes would fail on its first out-of-range label."""
    if cfg.num_classes is None:
        return info.num_classes
    if cfg.num_classes < info.num_classes:
        raise ValueError(f"num_classes: data set {cfg.dataset!r} has {info.num_classes} "
                         f"classes, got {cfg.num_classes}")
    return cfg.num_classes


def check_fits(model: nn.Module, info, dataset: str, what: str) -> None:
    """One forward of a zero input of the data set's shape: a model made
    for other inputs, or with fewer outputs than the data set has classes,
    fails here with a message naming ``what`` instead of in the first batch."""
    try:
        outputs = output_width(model, info.input_shape)
    except ValueError as exc:
        raise ValueError(f"{what}: does not take data set {dataset!r}'s inputs ({exc})") from exc
    if outputs < info.num_classes:
        raise ValueError(f"{what}: has {outputs} outputs, data set {dataset!r} "
                         f"has {info.num_classes} classes")


# ---- the job folder ----------------------------------------------------------
JOB_RECORD = "config.json"
PHASES = ("dense", "finetune", "retrain")


def run_outputs(job_dir: Path) -> list[Path]:
    """What prune and finetune write in ``job_dir`` and a resume would reuse."""
    files = [job_dir / name for name in ("result.json", "pruned.pt", "dense.pt")]
    files += [job_dir / phase / name for phase in PHASES
              for name in ("checkpoint.pt", "best.pt", "log.jsonl")]
    return files


def check_job_dir(cfg: RunConfig, command: str, pruned_model: Optional[str] = None
                  ) -> dict[str, Any]:
    """Read-only checks, run by every rank before any data is read: the job
    folder can be written, the inputs are not among its outputs, and a resume
    continues the run the folder holds. Returns the record to write."""
    job_dir = Path(cfg.job_dir)
    _check_writable(job_dir)
    inputs = {"pretrained_model": cfg.pretrained_model, "pruned_model": pruned_model}
    outputs = {path.resolve() for path in run_outputs(job_dir) + [job_dir / JOB_RECORD]}
    for name, path in inputs.items():
        if path is not None and Path(path).resolve() in outputs:
            raise ValueError(f"{name}: {path} is one of job_dir {job_dir}'s outputs, which this "
                             f"run overwrites or removes; copy it elsewhere or use another "
                             f"--job_dir")
    record = {"command": command, "config": with_absolute_paths(cfg).to_dict()}
    if pruned_model is not None:
        record["pruned_model"] = os.path.abspath(pruned_model)
    if cfg.resume:
        _check_same_run(job_dir, record)
    return record


def start_job(cfg: RunConfig, record: dict[str, Any]) -> Path:
    """Record the run in its job folder (rank 0). Starting over
    (``resume=False``) first removes the old run's outputs, its record first:
    a crash midway leaves outputs without a record, which a resume refuses."""
    job_dir = Path(cfg.job_dir)
    if is_main():
        try:
            if not cfg.resume:
                for path in [job_dir / JOB_RECORD] + run_outputs(job_dir):
                    path.unlink(missing_ok=True)
            with atomic_write(job_dir / JOB_RECORD, "w") as f:
                json.dump(record, f, indent=2)
        except OSError as exc:
            raise ValueError(f"job_dir {job_dir}: cannot be written: {exc}") from exc
    barrier()
    return job_dir


def _check_writable(job_dir: Path) -> None:
    existing = job_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        what = "it" if existing == job_dir else f"its parent {existing}"
        raise ValueError(f"job_dir {job_dir}: {what} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"job_dir {job_dir}: {existing} is not writable")


def _check_same_run(job_dir: Path, record: dict[str, Any]) -> None:
    leftovers = [str(p.relative_to(job_dir)) for p in run_outputs(job_dir) if p.exists()]
    if not leftovers:
        return  # nothing a resume would reuse: any settings may start here
    path = job_dir / JOB_RECORD
    advice = "pass --no-resume to start over (removing them) or use another --job_dir"
    if not path.exists():
        raise ValueError(f"job_dir {job_dir}: holds {', '.join(leftovers)} but no {JOB_RECORD} "
                         f"saying which settings made them; {advice}")
    recorded, old = read_job_record(path)
    differences = [f"{key}: {recorded.get(key)!r} -> {record.get(key)!r}"
                   for key in ("command", "pruned_model") if recorded.get(key) != record.get(key)]
    new = RunConfig.from_dict(record["config"])
    differences += [f"{name}: {getattr(old, name)!r} -> {getattr(new, name)!r}"
                    for name in changed_fields(old, new)]
    if differences:
        raise ValueError(
            f"job_dir {job_dir}: was started with other settings ({'; '.join(differences)}); "
            f"resuming would reuse its results under the new ones. Only "
            f"{', '.join(sorted(RESUMABLE_CHANGES))} may change on a resume; {advice}")


def read_job_record(path: Path) -> tuple[dict[str, Any], RunConfig]:
    """A job folder's ``config.json`` and its config, checked; errors name the file."""
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("command"), str):
            raise ValueError("expected a mapping with a 'command' string")
        if not isinstance(record.get("config"), dict):
            raise ValueError("expected a 'config' mapping")
        return record, RunConfig.from_dict(record["config"])
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: not a job record written by sparsekernels ({exc}); "
                         f"pass --no-resume to start over") from exc


def _phase(trainer: Trainer) -> dict[str, Any]:
    start = time.perf_counter()
    metrics = trainer.fit()
    return {**metrics, "seconds": round(time.perf_counter() - start, 2)}


def _evaluate(cfg, model, data, device):
    from .metrics import evaluate

    loader = torch.utils.data.DataLoader(data[1], batch_size=cfg.eval_batch_size)
    return evaluate(model, loader, device=device)


def _finish(cfg, job_dir, model, method, metrics, result, flops_dense, info, num_classes,
            latency):
    masks = method.masks(model)
    result.update(
        test=metrics,
        sparsity=method.sparsity(model),
        flops_dense=flops_dense,
        flops=count_flops(model, info.input_shape),
        # DPPNet layers by the paper's metric (their union support); the same
        # count as ``flops`` for every other model
        flops_union=count_flops(model, info.input_shape, dpp_metric="union"),
        params=sum(p.numel() for p in model.parameters()),
        nonzero_params=sum(int((p != 0).sum()) for p in model.parameters()),
    )
    if is_main():  # under torchrun every rank holds the same model: one writes
        write_result(job_dir, result, lambda path: save_model(
            path, model, cfg.arch, num_classes, method=cfg.method,
            config=json.dumps(cfg.to_dict()), masks=masks, **method.saved_extras()))
        if latency:  # after result.json is first written: a failure here loses no training
            result["exported"] = _speed_of(job_dir / "pruned.pt", model)
            _write_json(job_dir / "result.json", result)
    barrier()
    log.info("%s: top1 %.2f%%, sparsity %s", cfg.method, 100 * metrics["top1"], result["sparsity"])
    return result


def write_result(job_dir: Path, result: dict[str, Any], save_pruned) -> None:
    """``save_pruned(job_dir / "pruned.pt")``, then ``result.json``. The old
    result.json goes first: a crash in between leaves no result.json rather
    than one describing another pruned.pt."""
    (job_dir / "result.json").unlink(missing_ok=True)
    save_pruned(job_dir / "pruned.pt")
    _write_json(job_dir / "result.json", result)


def _write_json(path: Path, result: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2, default=str)


def _speed_of(pruned_path: Path, trained: nn.Module) -> dict[str, Any]:
    """``export.speed_report`` of the model ``export`` would make of
    ``pruned_path``, on the device ``trained`` is on."""
    model, record = load_model(pruned_path)
    device = next(trained.parameters()).device
    sparse = convert(model, record, f"model file {pruned_path}").model.to(device)
    return speed_report(sparse, record, latency=True)
