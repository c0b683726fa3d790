"""Network slimming (Liu et al., ICCV 2017; ``cifar/network-slimming`` of
``Eric-mingjie/rethinking-network-pruning``): train with an L1 penalty on BN
scaling factors, then remove the channels with the smallest |gamma| globally.

The BNs used are the *scaling BNs*: for each channel group that is not coupled
(see :mod:`.channels`), the first BN on the producer's output before any
depthwise conv (``group.bns[0]``). Left out, unlike the original, which
penalises every BN: BNs of coupled groups (e.g. those before a residual add:
their channels cannot be removed on their own), BNs after a depthwise conv
(the producer's BN already scores those channels), and groups without a BN.
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .channels import ChannelGroup, channel_groups
from .surgery import select_channels

log = logging.getLogger("sparsekernels")


def scaling_bns(model: nn.Module) -> list[tuple[ChannelGroup, str]]:
    """``(group, BN name)`` for every group the slimming methods score."""
    found = []
    for group in channel_groups(model):
        if not group.coupled and group.bns and model.get_submodule(group.bns[0]).affine:
            found.append((group, group.bns[0]))
    return found


class SlimmingRegularizer:
    """The sub-gradient of ``s * sum |gamma|`` over the scaling BNs.

    Call :meth:`apply` after ``loss.backward()`` and before ``optimizer.step()``.
    """

    def __init__(self, model: nn.Module, s: float = 1e-4):
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s < 0:
            raise ValueError(f"s: expected a non-negative sparsity weight, got {s!r}")
        self.model = model
        self.s = s
        # Names, not modules: slim() replaces the modules but keeps their names.
        self.bn_names = [bn for _, bn in scaling_bns(model)]
        log.info("slimming: L1 on gamma of %d BNs (s=%g)", len(self.bn_names), s)

    def apply(self) -> None:
        for name in self.bn_names:
            gamma = self.model.get_submodule(name).weight
            if not gamma.requires_grad:
                continue
            if gamma.grad is None:
                raise RuntimeError(
                    f"SlimmingRegularizer.apply: {name}.weight has no gradient; "
                    "call apply() after loss.backward()")
            gamma.grad.add_(torch.sign(gamma.detach()), alpha=self.s)


def slim(model: nn.Module, percent: float) -> dict[str, Tensor]:
    """Remove exactly ``round(percent * total)`` of the ``total`` channels the
    scaling BNs score, smallest |gamma| first across all layers, in place.

    Ties go to the earlier layer, then the lower channel index. A layer always
    keeps at least one channel: its last channel is passed over for the next
    smallest elsewhere. Returns ``{producer: kept channel indices}``.
    """
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent < 1:
        raise ValueError(f"percent: expected a fraction of channels in [0, 1), got {percent!r}")
    scored = scaling_bns(model)
    if not scored:
        raise ValueError("model: no channel group with a scaling BN to slim")
    gammas = [model.get_submodule(bn).weight.detach().abs().double().cpu() for _, bn in scored]
    sizes = [len(g) for g in gammas]
    total = sum(sizes)
    to_remove = round(percent * total)
    if to_remove > total - len(scored):
        raise ValueError(
            f"percent: removing {to_remove} of {total} channels would empty a layer; "
            f"at most {total - len(scored)} can go (one channel kept per layer)")
    owner = torch.repeat_interleave(torch.arange(len(scored)), torch.tensor(sizes))
    offset = torch.cumsum(torch.tensor([0] + sizes[:-1]), 0)
    keep = torch.ones(total, dtype=torch.bool)
    left = list(sizes)
    removed = 0
    for j in torch.argsort(torch.cat(gammas), stable=True).tolist():
        if removed == to_remove:
            break
        layer = int(owner[j])
        if left[layer] > 1:
            keep[j] = False
            left[layer] -= 1
            removed += 1
    kept = {}
    for i, (group, _) in enumerate(scored):
        index = torch.nonzero(keep[offset[i]: offset[i] + sizes[i]]).flatten()
        if len(index) < sizes[i]:
            select_channels(model, group, index)
        kept[group.producer] = index
    log.info("slimming: removed %d of %d channels (%.1f%%)", removed, total, 100 * removed / total)
    return kept


def channel_sparsity(
    original: nn.Module, pruned: nn.Module, layers: Optional[Iterable[str]] = None
) -> float:
    """Fraction of the output channels of ``layers`` (default: every producer
    whose group is not coupled in ``original``) that ``pruned`` no longer has.
    Pass ``layers=slim(...).keys()`` for the channels slimming scores."""
    if layers is None:
        layers = [g.producer for g in channel_groups(original) if not g.coupled]
    layers = list(layers)
    if not layers:
        raise ValueError("layers: no prunable layer to measure")
    before = sum(_out_channels(original, name, "original") for name in layers)
    after = sum(_out_channels(pruned, name, "pruned") for name in layers)
    return 1 - after / before


def _out_channels(model: nn.Module, name: str, argument: str) -> int:
    try:
        module = model.get_submodule(name)
    except AttributeError as e:
        raise ValueError(f"{argument}: has no layer {name!r}") from e
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    if isinstance(module, nn.Linear):
        return module.out_features
    raise ValueError(f"{argument}: {name!r} is a {type(module).__name__}, not a Conv2d/Linear")
