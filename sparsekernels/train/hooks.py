"""The points where a pruning method plugs into the generic training loop.

A method subclasses :class:`TrainHooks` and overrides what it needs; every
method gets the *unwrapped* model (never the DDP wrapper), so parameter and
buffer names carry no ``module.`` prefix.

Under DDP every rank runs every hook. Hooks must keep ranks identical by
computing only from state that is already in sync: the weights (DDP
broadcasts them from rank 0 at wrap time and all-reduces the gradients, so
they stay equal), the epoch number and the hook's own state. A mask computed
from the weights in ``on_epoch_start`` is therefore the same on every rank;
masks kept as module buffers are in addition broadcast from rank 0 by DDP at
each forward (``broadcast_buffers=True``), and the loop broadcasts all
buffers once more before each evaluation and checkpoint.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Union

import torch
from torch import nn


class TrainHooks:
    """No-op base class; override what the method needs.

    Call order per :meth:`Trainer.fit`::

        on_train_start                       once, before a checkpoint is restored
        for each epoch:
            on_epoch_start
            for each batch:
                forward; loss = criterion + sum(extra_loss)
                backward (grads already all-reduced and, with fp16, unscaled)
                after_backward
                optimizer.step
                after_step
            evaluate; sparsity; checkpoint (which stores state_dict)
    """

    def on_train_start(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Set-up (e.g. add a parameter group, build initial masks). On resume
        this runs before the checkpoint is loaded, so the saved model,
        optimizer and hook state then overwrite whatever it initialised."""

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None:
        """Per-epoch schedule, e.g. recompute the masks for this epoch."""

    def extra_loss(self, model: nn.Module) -> Optional[torch.Tensor]:
        """A scalar added to the training loss (e.g. a sparsity penalty)."""
        return None

    def after_backward(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        """Edit ``.grad`` before the step (e.g. an L1 subgradient on BN scales)."""

    def after_step(self, model: nn.Module) -> None:
        """After each optimizer step (e.g. clamp or re-mask parameters)."""

    def sparsity(self, model: nn.Module) -> Optional[float]:
        """The sparsity to log for this epoch, or None."""
        return None

    def state_dict(self) -> Dict[str, Any]:
        """The hook's state, saved in the checkpoint so a resume is exact. It
        is read back with ``torch.load(weights_only=True)``: keep it to
        tensors and plain Python containers/numbers/strings."""
        return {}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class HookList:
    """Calls a sequence of hooks in order."""

    def __init__(self, hooks: Union[TrainHooks, Iterable[TrainHooks]]):
        self.hooks: List[TrainHooks] = [hooks] if isinstance(hooks, TrainHooks) else list(hooks)
        for hook in self.hooks:
            if not isinstance(hook, TrainHooks):
                raise ValueError(f"hooks must be TrainHooks instances, got {type(hook).__name__}")

    def on_train_start(self, model, optimizer):
        for hook in self.hooks:
            hook.on_train_start(model, optimizer)

    def on_epoch_start(self, epoch, model):
        for hook in self.hooks:
            hook.on_epoch_start(epoch, model)

    def extra_losses(self, model) -> List[torch.Tensor]:
        losses = (hook.extra_loss(model) for hook in self.hooks)
        return [loss for loss in losses if loss is not None]

    def after_backward(self, model, optimizer):
        for hook in self.hooks:
            hook.after_backward(model, optimizer)

    def after_step(self, model):
        for hook in self.hooks:
            hook.after_step(model)

    def sparsity(self, model) -> Optional[float]:
        """The first sparsity a hook reports (one method per run is the norm)."""
        for hook in self.hooks:
            value = hook.sparsity(model)
            if value is not None:
                return float(value)
        return None

    def state_dict(self) -> List[Dict[str, Any]]:
        return [hook.state_dict() for hook in self.hooks]

    def load_state_dict(self, states: List[Dict[str, Any]]) -> None:
        if len(states) != len(self.hooks):
            raise ValueError(
                f"the checkpoint holds state for {len(states)} hooks but the Trainer has "
                f"{len(self.hooks)}: resume with the same hooks, in the same order"
            )
        for hook, state in zip(self.hooks, states):
            hook.load_state_dict(state)
