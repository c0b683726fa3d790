"""Global Sparse Momentum SGD (Ding et al., NeurIPS 2019, ``DingXiaoH/GSM-SGD``).

At every step the prunable weights (every tensor with ``dim in (2, 4)``: conv
and linear weights, the original's rule) are ranked together, across layers,
by the first-order Taylor saliency ``|w * g|``. Only the top
``round(nonzero_ratio * total)`` keep their loss gradient; the rest receive only
weight decay through momentum, so they drift to zero while the selected ones
learn. After training :func:`gsm_final_prune` keeps the top weights by ``|w|``
and zeroes the rest.

    opt = GSMSGD(model.parameters(), lr=5e-3, momentum=0.98, nonzero_ratio=0.1)
    ... train ...
    masks = gsm_final_prune(model, nonzero_ratio=0.1)

Unlike the original (``int()``, then ``|w*g| >= threshold``, so ties keep more),
exactly ``pruned_count(total, nonzero_ratio)`` weights are kept (round half
up, the rule every pruner here shares); ties are broken by position.
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle

from .base import pruned_count, smallest


def is_prunable(param: Tensor) -> bool:
    """The original's rule: conv and linear weights, not BN or biases."""
    return param.dim() in (2, 4)


def _check_nonzero_ratio(nonzero_ratio: float) -> None:
    if not 0.0 <= nonzero_ratio <= 1.0:
        raise ValueError(f"nonzero_ratio: expected a fraction in [0, 1], got {nonzero_ratio}")


def _keep_largest(scores: Sequence[Tensor], kept: int) -> List[Tensor]:
    """Masks (shaped like ``scores``) of exactly ``kept`` largest entries over
    all ``scores`` together, by :func:`~.base.smallest` (ties at the
    cut: the later positions in the concatenated order are kept)."""
    flat = torch.cat([s.detach().flatten() for s in scores])
    keep = smallest(flat, flat.numel() - kept)
    return [part.view_as(s) for part, s in zip(keep.split([s.numel() for s in scores]), scores)]


class GSMSGD(Optimizer):
    """SGD with momentum where, each step, only the globally top
    ``pruned_count(total, nonzero_ratio)`` (``round``, halves up) prunable
    weights by ``|w * g|`` get their loss gradient; every weight gets weight
    decay and momentum:

        d = mask * g + wd * w;   buf = momentum * buf + d;   w -= lr * buf

    (Nesterov: ``w -= lr * (d + momentum * buf)``; the first step sets
    ``buf = d``, as ``torch.optim.SGD``.) Prunable tensors (``dim in (2, 4)``)
    decay with ``weight_decay``, the others (BN, biases) with
    ``weight_decay_bias`` and are never masked. A param group with
    ``gsm=False`` is plain SGD with those decays. All GSM groups are ranked
    together, so they must share one ``nonzero_ratio``. A parameter without a
    gradient is skipped and left out of the ranking. With ``nonzero_ratio=1``
    and ``weight_decay_bias=weight_decay`` this is exactly
    ``torch.optim.SGD(momentum, weight_decay)``.
    """

    def __init__(self, params, lr: float, momentum: float = 0.98, weight_decay: float = 1e-4,
                 nesterov: bool = False, nonzero_ratio: float = 0.1, weight_decay_bias: float = 0.0):
        if lr < 0:
            raise ValueError(f"lr: expected >= 0, got {lr}")
        if momentum < 0:
            raise ValueError(f"momentum: expected >= 0, got {momentum}")
        if weight_decay < 0 or weight_decay_bias < 0:
            raise ValueError(f"weight_decay, weight_decay_bias: expected >= 0, got {weight_decay}, {weight_decay_bias}")
        if nesterov and momentum == 0:
            raise ValueError("nesterov: expected momentum > 0 with nesterov=True")
        _check_nonzero_ratio(nonzero_ratio)
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov,
                        nonzero_ratio=nonzero_ratio, weight_decay_bias=weight_decay_bias, gsm=True)
        super().__init__(params, defaults)

    @torch.no_grad()
    def gradient_masks(self) -> Dict[int, Tensor]:
        """``{id(param): mask}`` of the weights that keep their loss gradient
        this step, for the prunable params of the GSM groups."""
        groups = [g for g in self.param_groups if g["gsm"]]
        params = [p for g in groups for p in g["params"] if p.grad is not None and is_prunable(p)]
        if not params:
            return {}
        ratios = {g["nonzero_ratio"] for g in groups if any(is_prunable(p) for p in g["params"])}
        if len(ratios) > 1:
            raise ValueError(f"nonzero_ratio: the GSM param groups are ranked together and need one value, got {sorted(ratios)}")
        total = sum(p.numel() for p in params)
        masks = _keep_largest([(p * p.grad).abs() for p in params], pruned_count(total, ratios.pop()))
        return {id(p): m for p, m in zip(params, masks)}

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        masks = self.gradient_masks()
        for group in self.param_groups:
            momentum, lr = group["momentum"], group["lr"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError("params: GSMSGD does not support sparse gradients")
                d_p = p.grad
                if id(p) in masks:
                    d_p = d_p * masks[id(p)]
                decay = group["weight_decay"] if is_prunable(p) else group["weight_decay_bias"]
                if decay != 0:
                    d_p = d_p.add(p, alpha=decay)
                if momentum != 0:
                    state = self.state[p]
                    buf = state.get("momentum_buffer")
                    if buf is None:
                        buf = state["momentum_buffer"] = torch.clone(d_p).detach()
                    else:
                        buf.mul_(momentum).add_(d_p)
                    d_p = d_p.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.add_(d_p, alpha=-lr)
        return loss


def _prunable_named(params_or_model) -> List[tuple]:
    if isinstance(params_or_model, nn.Module):
        named = list(params_or_model.named_parameters())
    else:
        named = list(enumerate(params_or_model))
    return [(key, p) for key, p in named if is_prunable(p)]


@torch.no_grad()
def gsm_final_prune(params_or_model: Union[nn.Module, Iterable[Tensor]], nonzero_ratio: float) -> Dict[Union[str, int], Tensor]:
    """Keep the global top ``pruned_count(total, nonzero_ratio)`` prunable weights by
    ``|w|`` (the original's final step, not ``|w * g|``), zero the rest in
    place; returns the kept masks keyed by parameter name for a module, by
    position in the iterable otherwise. Exactly that many are kept."""
    _check_nonzero_ratio(nonzero_ratio)
    named = _prunable_named(params_or_model)
    if not named:
        raise ValueError("params_or_model: no conv or linear weight (dim 2 or 4) to prune")
    total = sum(p.numel() for _, p in named)
    masks = _keep_largest([p.abs() for _, p in named], pruned_count(total, nonzero_ratio))
    for (_, p), mask in zip(named, masks):
        p.mul_(mask)
    return {key: mask for (key, _), mask in zip(named, masks)}


def masked_gradient(model: nn.Module, masks: Mapping[str, Tensor]) -> List[RemovableHandle]:
    """Multiply each named parameter's gradient by its fixed mask (the lottery
    ticket retraining); returns the hook handles (``.remove()`` to undo). It
    masks gradients only: zero the pruned weights yourself (``gsm_final_prune``
    does; for a rewound ticket multiply the initial weights by the masks).
    With zero weights and masked gradients, weight decay and momentum keep
    them zero."""
    handles = []
    for name, mask in masks.items():
        param = model.get_parameter(name)
        handles.append(param.register_hook(lambda grad, mask=mask: grad * mask))
    return handles
