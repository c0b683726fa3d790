"""A generic loop to fine-tune (pruned) CNNs; pruning methods plug in
through :class:`TrainHooks`.

    from sparsekernels.train import Trainer, TrainHooks
    result = Trainer(model, train_set, test_set, epochs=90, job_dir="runs/r50",
                     hooks=[MyPruner()]).fit()

Multi-GPU: launch with ``torchrun`` and call :func:`init_from_env` first.
"""
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .distributed import DistInfo, barrier, cleanup, init_from_env, is_main, wrap_ddp
from .hooks import TrainHooks
from .loop import Trainer
from .lr import LR_POLICIES, build_lr_scheduler, lr_factor
from .metrics import evaluate, topk_correct

__all__ = [
    "CheckpointError", "DistInfo", "LR_POLICIES", "TrainHooks", "Trainer", "barrier",
    "build_lr_scheduler", "cleanup", "evaluate", "init_from_env", "is_main", "load_checkpoint",
    "lr_factor", "save_checkpoint", "topk_correct", "wrap_ddp",
]
