"""``Trainer``: the method-agnostic SGD loop that pruning methods plug into
through :class:`~sparsekernels.train.hooks.TrainHooks`."""
from __future__ import annotations

import contextlib
import logging
import random
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from . import distributed
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .epoch_log import EpochLog
from .hooks import HookList, TrainHooks
from .lr import build_lr_scheduler, check_lr_policy
from .metrics import MetricSums, evaluate

log = logging.getLogger("sparsekernels")

AMP_DTYPES = {False: None, True: torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16}
# (param_groups, lr, momentum, weight_decay, nesterov) -> optimizer
OptimizerFactory = Callable[[List[Dict[str, Any]], float, float, float, bool],
                            torch.optim.Optimizer]


def param_groups(model: nn.Module, wd_bn: bool) -> List[Dict[str, Any]]:
    """The trainable parameters, in one group, or with ``wd_bn=False`` in a
    decayed group (ndim > 1: conv/linear weights, including a parametrized
    weight's ``original``) and a ``weight_decay=0`` group (ndim <= 1: BN
    scales and shifts, biases)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if wd_bn:
        return [{"params": params}]
    groups = [{"params": [p for p in params if p.ndim > 1]},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    return [group for group in groups if group["params"]]


def sgd(groups, lr, momentum, weight_decay, nesterov) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                           nesterov=nesterov)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # CUDA generators too
    np.random.seed(seed)
    random.seed(seed)


class Trainer:
    """Train ``model`` on ``train_set`` and evaluate it on ``test_set`` (both
    yielding ``(input, class_index)``) after every epoch. Accuracies are
    fractions in [0, 1].

    Only rank 0 writes to ``job_dir``: ``checkpoint.pt`` after every epoch,
    ``best.pt`` on a new best test top-1, ``log.jsonl`` with one record per
    epoch. With ``resume`` and an existing ``checkpoint.pt``, :meth:`fit`
    continues where it stopped, replaying what an uninterrupted run would have
    done (bit-exact on CPU; on GPU as far as the kernels are deterministic).
    For that :meth:`fit` seeds the global torch/numpy/random generators with
    ``seed + rank`` and saves their states in every checkpoint.

    Under an initialised process group (see :mod:`.distributed`) each rank
    trains on its :class:`DistributedSampler` shard through DDP and evaluates
    a strided shard of the test set; metrics are all-reduced. All ranks must
    see the same ``job_dir`` (a shared file system) to resume.

    ``amp`` is False, "bf16" (also True) or "fp16" (with a GradScaler); it
    only applies on CUDA. ``wd_bn=False`` exempts BN parameters and biases
    from weight decay. ``optimizer_factory(param_groups, lr, momentum,
    weight_decay, nesterov)`` replaces the default SGD.
    """

    def __init__(
        self,
        model: nn.Module,
        train_set: Dataset,
        test_set: Dataset,
        *,
        epochs: int,
        job_dir: Union[str, Path],
        batch_size: int = 128,
        eval_batch_size: int = 256,
        lr: float = 0.1,
        momentum: float = 0.9,
        nesterov: bool = False,
        weight_decay: float = 1e-4,
        wd_bn: bool = True,
        warmup_epochs: int = 0,
        lr_policy: str = "cos",
        label_smoothing: float = 0.0,
        amp: Union[bool, str] = False,
        seed: int = 0,
        resume: bool = True,
        hooks: Union[TrainHooks, Sequence[TrainHooks]] = (),
        optimizer_factory: Optional[OptimizerFactory] = None,
        num_workers: int = 0,
        device: Union[str, torch.device, None] = None,
        progress: bool = True,
    ):
        _check_args(epochs=epochs, batch_size=batch_size, eval_batch_size=eval_batch_size, lr=lr,
                    momentum=momentum, weight_decay=weight_decay, label_smoothing=label_smoothing,
                    amp=amp, num_workers=num_workers,
                    flags={"resume": resume, "nesterov": nesterov, "wd_bn": wd_bn,
                           "progress": progress})
        check_lr_policy(lr_policy, epochs, warmup_epochs)
        if len(train_set) == 0 or len(test_set) == 0:
            raise ValueError("train_set and test_set must not be empty")
        self.epochs, self.warmup_epochs, self.lr_policy = epochs, warmup_epochs, lr_policy
        self.job_dir = Path(job_dir)
        self.resume, self.progress, self.seed = resume, progress, seed
        self.rank, self.world_size = distributed.rank(), distributed.world_size()
        self.device = torch.device(device) if device is not None else _default_device()
        self.amp_dtype = AMP_DTYPES[amp]
        if self.amp_dtype is not None and self.device.type != "cuda":
            warnings.warn(f"amp={amp!r} is ignored on {self.device.type}: training in fp32")
            self.amp_dtype = None

        self.model = model.to(self.device)   # hooks, evaluation and checkpoints use this one
        self.train_model = distributed.wrap_ddp(self.model, self.device)  # forward/backward
        factory = optimizer_factory or sgd
        groups = param_groups(self.model, wd_bn)
        self.optimizer = factory(groups, lr, momentum, weight_decay, nesterov)
        self.lr_scheduler = None  # built in fit(), after hooks may have added param groups
        self.scaler = torch.amp.GradScaler(self.device.type,
                                           enabled=self.amp_dtype == torch.float16)
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.hooks = HookList(hooks)

        # Shuffling belongs to the sampler: its order for epoch e depends
        # only on seed + e, so a resumed run sees the same batches.
        self.train_sampler = DistributedSampler(train_set, num_replicas=self.world_size,
                                                rank=self.rank, shuffle=True, seed=seed)
        pin = self.device.type == "cuda"
        self.train_loader = DataLoader(train_set, batch_size=batch_size, sampler=self.train_sampler,
                                       num_workers=num_workers, pin_memory=pin)
        # A strided shard, not DistributedSampler: that one pads with repeats,
        # which would count some test images twice.
        test_shard = (Subset(test_set, range(self.rank, len(test_set), self.world_size))
                      if self.world_size > 1 else test_set)
        self.test_loader = DataLoader(test_shard, batch_size=eval_batch_size, shuffle=False,
                                      num_workers=num_workers, pin_memory=pin)

        self.config = {
            "epochs": epochs, "batch_size": batch_size, "eval_batch_size": eval_batch_size,
            "lr": lr, "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay,
            "wd_bn": wd_bn, "warmup_epochs": warmup_epochs, "lr_policy": lr_policy,
            "label_smoothing": label_smoothing, "amp": str(amp), "seed": seed,
            "num_workers": num_workers, "world_size": self.world_size,
            "optimizer": type(self.optimizer).__name__,
            "hooks": [type(hook).__name__ for hook in self.hooks.hooks],
        }
        self.best_top1 = float("-inf")
        self.epoch_log = EpochLog(self.job_dir / "log.jsonl")

    @property
    def checkpoint_path(self) -> Path:
        return self.job_dir / "checkpoint.pt"

    def fit(self) -> Dict[str, Any]:
        """Train the remaining epochs; returns the last epoch's log record
        plus ``best_top1``."""
        if distributed.is_main():
            self.job_dir.mkdir(parents=True, exist_ok=True)
        distributed.barrier()  # the directory exists before anyone looks in it
        seed_everything(self.seed + self.rank)  # ranks differ in dropout/augmentation draws
        self.hooks.on_train_start(self.model, self.optimizer)
        self.lr_scheduler = build_lr_scheduler(self.optimizer, self.lr_policy,
                                               len(self.train_loader), self.epochs,
                                               self.warmup_epochs)
        start_epoch, record = self._restore_or_start()
        if start_epoch >= self.epochs and distributed.is_main():
            log.info("%s: all %d epochs already done", self.checkpoint_path, self.epochs)
        for epoch in range(start_epoch, self.epochs):
            record = self._run_epoch(epoch)
        return {**record, "best_top1": self.best_top1}

    def _restore_or_start(self):
        """(first epoch to run, last epoch's record or None)."""
        if not (self.resume and self.checkpoint_path.exists()):
            if distributed.is_main():
                if self.checkpoint_path.exists():
                    log.warning("resume=False: overwriting the run in %s", self.job_dir)
                self.epoch_log.start_fresh()
            return 0, None
        state = load_checkpoint(self.checkpoint_path)
        # Evaluation batching does not touch training: not a change to warn of.
        changed = {k for k in self.config.keys() | state["config"].keys()
                   if k != "eval_batch_size" and self.config.get(k) != state["config"].get(k)}
        if changed:
            warnings.warn(f"resuming {self.checkpoint_path} with changed settings "
                          f"{sorted(changed)}: the run will not replay the interrupted one")
        self._check_progress(state, changed)
        try:
            self._load_state(state)
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as exc:
            raise CheckpointError(f"{self.checkpoint_path}: does not fit this run "
                                  f"({type(exc).__name__}: {exc})") from exc
        self.best_top1 = state["best_top1"]
        if distributed.is_main():
            self.epoch_log.rewind(state["epoch"], state["metrics"])
            log.info("resumed %s after epoch %d", self.checkpoint_path, state["epoch"])
        return state["epoch"], state["metrics"]

    def _check_progress(self, state: Dict[str, Any], changed: set) -> None:
        """The checkpoint's epoch is one this run can continue from, and
        agrees with its last log record and (same batches per epoch) with its
        lr schedule's step count: a hand-edited epoch is refused."""
        epoch, path = state["epoch"], self.checkpoint_path
        if not 1 <= epoch <= self.epochs:
            raise CheckpointError(f"{path}: epoch {epoch} is out of range [1, {self.epochs}] "
                                  f"for this run of {self.epochs} epochs")
        if state["metrics"].get("epoch") != epoch - 1:
            raise CheckpointError(f"{path}: epoch {epoch} but its last record is of epoch "
                                  f"{state['metrics'].get('epoch')!r} (expected {epoch - 1})")
        steps = state["lr_scheduler"].get("last_epoch")
        if not changed & {"batch_size", "world_size"} and steps != epoch * len(self.train_loader):
            raise CheckpointError(f"{path}: epoch {epoch} but its lr schedule is at step "
                                  f"{steps!r}, expected {epoch * len(self.train_loader)}")

    def _load_state(self, state: Dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.hooks.load_state_dict(state["hooks"])
        if len(state["rng"]) == self.world_size:
            set_rng_state(state["rng"][self.rank])
        else:
            warnings.warn(f"the checkpoint was written by {len(state['rng'])} ranks, this run has "
                          f"{self.world_size}: random draws restart from the seed")

    def _run_epoch(self, epoch: int) -> Dict[str, Any]:
        started = time.perf_counter()
        self.train_sampler.set_epoch(epoch)
        self.hooks.on_epoch_start(epoch, self.model)
        train, extra_loss, last_lr = self._train_one_epoch(epoch)
        # Each rank's BN statistics saw only its own last batches: adopt
        # rank 0's, which are the ones that get saved.
        distributed.broadcast_buffers(self.model)
        with self._autocast():
            test = evaluate(self.model, self.test_loader)
        record = {
            "epoch": epoch,
            "train_loss": train["loss"], "train_top1": train["top1"], "extra_loss": extra_loss,
            "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
            "sparsity": self.hooks.sparsity(self.model),
            "lr": last_lr,
            "seconds": time.perf_counter() - started,
        }
        is_best = record["test_top1"] > self.best_top1
        self.best_top1 = max(self.best_top1, record["test_top1"])
        self._save(epoch, record, is_best)
        return record

    def _train_one_epoch(self, epoch: int):
        self.train_model.train()
        sums = MetricSums(self.device)
        extra_sum, extra_seen = torch.zeros((), device=self.device), False
        bar = tqdm(self.train_loader, desc=f"epoch {epoch + 1}/{self.epochs}",
                   disable=not (self.progress and distributed.is_main()), dynamic_ncols=True)
        for step, (inputs, targets) in enumerate(bar):
            inputs = inputs.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with self._autocast():
                logits = self.train_model(inputs)
                loss = self.criterion(logits, targets)
            extras = self.hooks.extra_losses(self.model)
            total = loss + sum(extras) if extras else loss
            self.scaler.scale(total).backward()
            if self.scaler.is_enabled():
                # Hooks edit gradients in true units: a regulariser's
                # subgradient must not be added to fp16-scaled ones.
                self.scaler.unscale_(self.optimizer)
            self.hooks.after_backward(self.model, self.optimizer)
            last_lr = self.optimizer.param_groups[0]["lr"]
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.hooks.after_step(self.model)
            self.lr_scheduler.step()

            sums.add(loss.detach() * targets.numel(), logits.detach().float(), targets)
            if extras:
                extra_sum += sum(e.detach().float() for e in extras)
                extra_seen = True
            if step % 20 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{last_lr:.4g}")
        # Extra losses depend only on synced weights: every rank has the same.
        extra_loss = extra_sum.item() / len(self.train_loader) if extra_seen else None
        return sums.reduce(), extra_loss, last_lr

    def _save(self, epoch: int, record: Dict[str, Any], is_best: bool) -> None:
        rng = distributed.all_gather_objects(rng_state())  # a collective: every rank calls it
        if not distributed.is_main():
            return
        state = {
            "epoch": epoch + 1, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.lr_scheduler.state_dict(), "scaler": self.scaler.state_dict(),
            "hooks": self.hooks.state_dict(), "rng": rng, "config": self.config,
            "best_top1": self.best_top1, "metrics": record,
        }
        # best.pt first: a crash before checkpoint.pt reruns this epoch,
        # which reproduces the same model and rewrites best.pt.
        if is_best:
            save_checkpoint(self.job_dir / "best.pt", state)
        save_checkpoint(self.checkpoint_path, state)
        self.epoch_log.append(record)
        log.info("epoch %d/%d: %s", epoch + 1, self.epochs, record)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)


def _default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _check_args(*, epochs, batch_size, eval_batch_size, lr, momentum, weight_decay,
                label_smoothing, amp, num_workers, flags) -> None:
    for name, value in flags.items():  # the string "no" would be truthy
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, got {value!r}")
    for name, value in (("epochs", epochs), ("batch_size", batch_size),
                        ("eval_batch_size", eval_batch_size)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}")
    if not isinstance(amp, (bool, str)) or amp not in AMP_DTYPES:
        raise ValueError(f"amp must be False, True, 'bf16' or 'fp16', got {amp!r}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}")
