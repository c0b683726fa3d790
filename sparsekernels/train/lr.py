"""Learning-rate policies, evaluated once per iteration.

``cos``   ``0.5·lr0·(1 + cos(π·(e − w)/(E − w)))`` at the integer epoch ``e``
          (the 1xN code's cosine).
``step``  ``lr0`` times 0.1 once ``e ≥ 0.5·E`` and 0.1 again once ``e ≥ 0.75·E``
          (the Rethinking / PFF fine-tuning schedule; for odd ``E`` the drop
          lands on the next whole epoch).
``const`` ``lr0``.

With ``w = warmup_epochs > 0`` any policy is multiplied, while ``e < w``, by
the linear ramp ``(1 + i)/(w·n)`` where ``i`` is the global iteration and ``n``
the iterations per epoch, as in the 1xN code. (Like there, the cosine is not
held at 1 during warm-up: it is evaluated at ``e − w < 0``, a hair below 1.)
"""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

LR_POLICIES = ("cos", "step", "const")


def check_lr_policy(policy: str, epochs: int, warmup_epochs: int) -> None:
    if policy not in LR_POLICIES:
        raise ValueError(f"unknown lr_policy {policy!r}: expected one of {LR_POLICIES}")
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(
            f"warmup_epochs must be in [0, epochs={epochs}), got {warmup_epochs}"
        )


def lr_factor(policy: str, iteration: int, iters_per_epoch: int, epochs: int,
              warmup_epochs: int = 0) -> float:
    """The multiplier of the base lr at a global (0-based) ``iteration``."""
    epoch = iteration // iters_per_epoch
    if policy == "cos":
        w = warmup_epochs
        factor = 0.5 * (1.0 + math.cos(math.pi * (epoch - w) / (epochs - w)))
    elif policy == "step":
        factor = 0.1 ** sum(epoch >= fraction * epochs for fraction in (0.5, 0.75))
    elif policy == "const":
        factor = 1.0
    else:
        raise ValueError(f"unknown lr_policy {policy!r}: expected one of {LR_POLICIES}")
    if epoch < warmup_epochs:
        factor *= (1 + iteration) / (warmup_epochs * iters_per_epoch)
    return factor


def build_lr_scheduler(optimizer: torch.optim.Optimizer, policy: str, iters_per_epoch: int,
                       epochs: int, warmup_epochs: int = 0) -> LambdaLR:
    """A scheduler to ``step()`` after every optimizer step. Each parameter
    group's lr is its initial lr times :func:`lr_factor`, so groups a method
    gives its own lr keep their ratio to the others."""
    check_lr_policy(policy, epochs, warmup_epochs)
    if iters_per_epoch < 1:
        raise ValueError(f"iters_per_epoch must be >= 1, got {iters_per_epoch}")

    # A closure, not a callable object: LambdaLR would save a callable
    # object's attributes and a resume would then bring back the old epochs.
    def factor(iteration: int) -> float:
        return lr_factor(policy, iteration, iters_per_epoch, epochs, warmup_epochs)

    return LambdaLR(optimizer, factor)
