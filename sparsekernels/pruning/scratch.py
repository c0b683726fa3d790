"""The scratch-training protocols of "Rethinking the Value of Network Pruning"
(Liu et al., ICLR 2019): train the pruned architecture from a fresh init,
either for the large model's epochs (scratch-E) or for its computation budget
(scratch-B: more epochs when the pruned net needs fewer FLOPs).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn
from torch.nn.utils import parametrize


def reinitialize(model: nn.Module, seed: int) -> nn.Module:
    """Re-initialise every module of ``model`` with its ``reset_parameters``
    (PyTorch's default init; BN running stats are reset too), in place and
    reproducibly for ``seed``. The global RNG state is left as it was.

    A parametrized tensor (a pruning mask) gets a fresh *original*, the
    parametrization itself is kept. A module holding parameters of its own
    without ``reset_parameters`` is an error: it would silently keep its
    trained weights.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    stale = [
        f"{name} ({type(m).__name__})" for name, m in model.named_modules()
        if not hasattr(m, "reset_parameters") and _owns_parameters(m)
    ]
    if stale:
        raise ValueError(f"model: no reset_parameters() on {', '.join(stale)}")
    devices = sorted({p.device.index for p in model.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for m in model.modules():
            if hasattr(m, "reset_parameters"):
                _reset(m)
    return model


def _owns_parameters(m: nn.Module) -> bool:
    # A ParametrizationList holds the `original` its owner's reset refreshes.
    if isinstance(m, parametrize.ParametrizationList):
        return False
    return any(p is not None for p in m._parameters.values())


def _reset(m: nn.Module) -> None:
    if not parametrize.is_parametrized(m):
        m.reset_parameters()
        return
    # reset_parameters() writes into `m.weight`, which for a parametrized module
    # is a computed copy: lift the parametrizations off, reset, put them back.
    saved = {name: list(plist) for name, plist in m.parametrizations.items()}
    for name in saved:
        parametrize.remove_parametrizations(m, name, leave_parametrized=False)
    m.reset_parameters()
    for name, plist in saved.items():
        for p in plist:
            parametrize.register_parametrization(m, name, p)


def scratch_epochs(
    base_epochs: int, flops_full: int, flops_pruned: int, mode: str = "E",
    cap: Optional[int] = None,
) -> int:
    """Epochs for training the pruned net from scratch.

    ``"E"``: ``base_epochs``. ``"B"``: ``int(base_epochs * flops_full /
    flops_pruned)`` (the CIFAR main_B.py), at most ``cap`` when given (the
    ImageNet scripts cap at 180 epochs once the FLOP ratio reaches 2).
    """
    if isinstance(base_epochs, bool) or not isinstance(base_epochs, int) or base_epochs < 1:
        raise ValueError(f"base_epochs: expected a positive int, got {base_epochs!r}")
    if mode not in ("E", "B"):
        raise ValueError(f"mode: expected 'E' or 'B', got {mode!r}")
    for name, flops in (("flops_full", flops_full), ("flops_pruned", flops_pruned)):
        if isinstance(flops, bool) or not isinstance(flops, (int, float)) or not flops > 0:
            raise ValueError(f"{name}: expected a positive FLOP count, got {flops!r}")
    if flops_pruned > flops_full:
        raise ValueError(
            f"flops_pruned: expected at most flops_full={flops_full}, got {flops_pruned}")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < base_epochs):
        raise ValueError(f"cap: expected None or an int >= base_epochs={base_epochs}, got {cap!r}")
    if mode == "E":
        return base_epochs
    epochs = math.floor(base_epochs * flops_full / flops_pruned)
    return epochs if cap is None else min(epochs, cap)
