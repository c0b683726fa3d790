"""Stripe-wise pruning with a learned Filter Skeleton (Meng et al., NeurIPS 2020,
``fxmeng/Pruning-Filter-in-Filter``).

A stripe is ``W[o, :, kh, kw]``: one kernel position of one filter across all
input channels. Each selected conv gets a trainable skeleton ``FS[Cout, Kh, Kw]``
(init 1) through ``torch.nn.utils.parametrize``, so the conv computes with
``W * FS.unsqueeze(1)``. :class:`SkeletonRegularizer` adds an L1 sub-gradient to
FS and zeroes stripes, either below a fixed threshold (the original) or down to
an exact target stripe sparsity. :func:`fold_skeletons` folds FS into W and
leaves plain convs whose zero stripes are the pruned ones.

    skeletons = attach_skeletons(model)          # before building the optimizer
    reg = SkeletonRegularizer(model, sr=1e-5, target=0.5)
    loss.backward(); reg.apply(); optimizer.step()
    masks = fold_skeletons(model)                # {conv name: kept stripes}

Dead filters (every stripe pruned), as the original: during training the BNs
after such a filter get ``gamma = beta = 0`` (:func:`silence_bns`, on the BNs
:func:`following_bns` finds), so its channel is exactly zero; at export
:func:`remove_dead_filters` removes the filter, its BN entries and the next
layers' input channels (``prune_out``/``prune_in``) with the package's channel
surgery, whenever that leaves the network's output unchanged.

A pruned stripe stays pruned: the parametrization holds a persistent ``keep``
mask, so the momentum residue an optimizer leaves in a zeroed FS entry never
reaches the forward pass. The original re-derives the mask every iteration from
``|FS| > threshold``; a stripe could come back there only if that residue
exceeded the threshold.
"""
from __future__ import annotations

import logging
from typing import Dict, Iterable, Optional, Sequence

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .base import check_level, is_depthwise, pruned_count, smallest
from .channels import ChannelGroup, channel_groups
from .surgery import select_channels, select_mask_channels

log = logging.getLogger("sparsekernels")


class FilterSkeleton(nn.Module):
    """Parametrization ``W -> W * (FS * keep).unsqueeze(1)`` of a conv weight."""

    def __init__(self, weight: Tensor):
        super().__init__()
        cout, _, kh, kw = weight.shape
        factory = dict(dtype=weight.dtype, device=weight.device)
        self.skeleton = nn.Parameter(torch.ones(cout, kh, kw, **factory))
        self.register_buffer("keep", torch.ones(cout, kh, kw, dtype=torch.bool, device=weight.device))

    def forward(self, weight: Tensor) -> Tensor:
        return weight * (self.skeleton * self.keep).unsqueeze(1)


def _skeleton_of(conv: nn.Module) -> Optional[FilterSkeleton]:
    if not parametrize.is_parametrized(conv, "weight"):
        return None
    found = [p for p in conv.parametrizations.weight if isinstance(p, FilterSkeleton)]
    return found[0] if found else None


def skeleton_modules(model: nn.Module) -> Dict[str, FilterSkeleton]:
    """``{conv name: its FilterSkeleton}`` for every conv with a skeleton."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            skeleton = _skeleton_of(module)
            if skeleton is not None:
                found[name] = skeleton
    return found


def attach_skeletons(model: nn.Module, layers: Optional[Iterable[str]] = None) -> Dict[str, nn.Parameter]:
    """Give each selected ``nn.Conv2d`` a Filter Skeleton; returns ``{name: FS}``.

    ``layers`` names the convs (exact module names); by default every
    non-depthwise Conv2d, the stem included as in the original: pass the names
    to leave some out. Call it before building the optimizer so FS (a parameter
    of the parametrization module) is in ``model.parameters()``.
    """
    convs = {name: m for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    if layers is None:
        # A depthwise stripe is a single weight; the original leaves those layers out.
        selected = [name for name, conv in convs.items() if not is_depthwise(conv)]
    else:
        selected = list(layers)
        unknown = [name for name in selected if name not in convs]
        if unknown:
            raise ValueError(f"layers: {unknown} are not nn.Conv2d modules of the model")
    attached = {}
    for name in selected:
        conv = convs[name]
        if _skeleton_of(conv) is not None:
            raise ValueError(f"layers: {name!r} already has a filter skeleton")
        parametrize.register_parametrization(conv, "weight", FilterSkeleton(conv.weight))
        attached[name] = _skeleton_of(conv).skeleton
    return attached


class SkeletonRegularizer:
    """L1 on the Filter Skeletons plus stripe pruning; call :meth:`apply` after
    ``loss.backward()`` and before ``optimizer.step()``.

    Every call adds ``sr * sign(FS)`` to ``FS.grad`` (the sub-gradient of
    ``sr * ||FS||_1``), then chooses the stripes to prune and zeroes their FS
    and FS.grad:

    * ``target=None`` (the original): stripes with ``|FS| <= threshold``.
    * ``target=level`` (in [0, 1)): the ``pruned_count(n, level)``
      (``round(n * level)``, halves up) stripes of smallest ``|FS|`` times
      the stripe's weight norm (FS starts at 1 everywhere), ``n``
      counted over all skeleton layers (``scope="global"``) or per layer
      (``scope="layer"``); ``threshold`` is unused. :meth:`set_level` moves
      the level (e.g. from a sparsity schedule).

    Exact in target mode: after each ``apply()`` exactly that many stripes are
    zero (per layer, or in total), ties in ``|FS|`` broken by stripe position
    (:func:`~.base.smallest`), as long as the level never decreases. Pruned
    stripes are never revived, so a lower level keeps the larger count already
    pruned. A global ranking can prune a whole layer; nothing guards that.
    """

    def __init__(
        self,
        model: nn.Module,
        sr: float = 1e-5,
        threshold: float = 1e-2,
        target: Optional[float] = None,
        scope: str = "global",
    ):
        self.model = model
        self.skeletons = skeleton_modules(model)
        if not self.skeletons:
            raise ValueError("model: no conv has a filter skeleton; call attach_skeletons(model) first")
        if sr < 0:
            raise ValueError(f"sr: expected >= 0, got {sr}")
        if threshold < 0:
            raise ValueError(f"threshold: expected >= 0, got {threshold}")
        if scope not in ("global", "layer"):
            raise ValueError(f"scope: expected 'global' or 'layer', got {scope!r}")
        self.sr = sr
        self.threshold = threshold
        self.scope = scope
        self.level: Optional[float] = None
        if target is not None:
            self.set_level(target)

    def _stripe_norms(self, name: str) -> Tensor:
        # A stripe's contribution is |FS| times the L2 norm of its weights:
        # ranking |FS| alone would tie every stripe at the start (FS = 1).
        original = self.model.get_submodule(name).parametrizations.weight.original
        return original.detach().norm(dim=1)

    def set_level(self, level: float) -> None:
        """Target stripe sparsity used from the next :meth:`apply` on."""
        check_level(level, "level")
        self.level = float(level)

    @torch.no_grad()
    def apply(self) -> None:
        for skeleton in self.skeletons.values():
            fs = skeleton.skeleton
            if fs.grad is None:
                fs.grad = torch.zeros_like(fs)
            fs.grad.add_(torch.sign(fs), alpha=self.sr)
        if self.level is None:
            for skeleton in self.skeletons.values():
                skeleton.keep.logical_and_(skeleton.skeleton.abs() > self.threshold)
        elif self.scope == "layer":
            for name, skeleton in self.skeletons.items():
                _prune_smallest([skeleton], [self._stripe_norms(name)], self.level)
        else:
            names = list(self.skeletons)
            _prune_smallest([self.skeletons[n] for n in names],
                            [self._stripe_norms(n) for n in names], self.level)
        for skeleton in self.skeletons.values():
            skeleton.skeleton.mul_(skeleton.keep)
            skeleton.skeleton.grad.mul_(skeleton.keep)


def _prune_smallest(skeletons, stripe_norms, level: float) -> None:
    """Clear ``keep`` for the ``pruned_count(n, level)`` stripes of smallest
    |FS|·||W stripe|| across ``skeletons``; already pruned ones score -1 so
    they go first and none is revived."""
    scores = torch.cat([
        torch.where(s.keep, s.skeleton.abs() * norm, torch.full_like(s.skeleton, -1.0)).flatten()
        for s, norm in zip(skeletons, stripe_norms)
    ])
    already = int((scores < 0).sum())
    keep = smallest(scores, max(pruned_count(scores.numel(), level), already))
    for s, part in zip(skeletons, keep.split([s.keep.numel() for s in skeletons])):
        s.keep.copy_(part.view_as(s.keep))


@torch.no_grad()
def fold_skeletons(model: nn.Module) -> Dict[str, Tensor]:
    """Fold every skeleton into its conv (``W <- W * FS``, pruned stripes zero)
    and remove the parametrization, leaving a plain ``weight`` Parameter (the
    same Parameter object, so an optimizer holding it stays valid).

    Returns ``{conv name: kept stripes [Cout, Kh, Kw] bool}``, read from the
    folded weight's nonzero stripes.
    """
    masks = {}
    for name, skeleton in skeleton_modules(model).items():
        conv = model.get_submodule(name)
        if len(conv.parametrizations.weight) > 1:
            raise ValueError(
                f"model: {name!r} has other weight parametrizations besides its skeleton; "
                "remove them before folding"
            )
        parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        masks[name] = conv.weight.ne(0).any(dim=1)
    return masks


@torch.no_grad()
def stripe_sparsity(model: nn.Module, layers: Optional[Iterable[str]] = None) -> float:
    """Zero stripes / all stripes over ``layers`` (default: the convs with a
    skeleton; after folding pass the names :func:`fold_skeletons` returned).

    Counted from all-zero stripes of the (effective) weight. For one layer it
    equals the zero-weight fraction whenever no kept stripe holds a zero weight
    (the case for trained weights); over layers of different ``Cin/groups``
    (stripe length) the zero-weight fraction weighs stripes by their length.
    """
    names = list(skeleton_modules(model)) if layers is None else list(layers)
    if not names:
        raise ValueError("layers: the model has no skeleton; pass the conv names to measure")
    zero = total = 0
    for name in names:
        stripes = model.get_submodule(name).weight.ne(0).any(dim=1)
        zero += int((~stripes).sum())
        total += stripes.numel()
    return zero / total


# ---- dead filters ------------------------------------------------------------

def dead_filters(mask: Tensor) -> Tensor:
    """Bool ``[Cout]``: the filters of a kept-weight (or kept-stripe) mask that
    keep nothing."""
    return ~mask.flatten(1).any(dim=1)


def following_bns(model: nn.Module, layers: Iterable[str]) -> Dict[str, list[str]]:
    """``{conv: the BNs of its output channels}`` for each of ``layers`` whose
    channels can be removed (an uncoupled :class:`~.channels.ChannelGroup`:
    in a CIFAR ResNet ``conv1 -> bn1`` of a block, not ``conv2 -> bn2``, whose
    channels meet the residual). These are the BNs the original zeroes for a
    dead filter. Trace the model before attaching skeletons (a parametrized
    conv couples its group). A model ``torch.fx`` cannot trace gets ``{}``."""
    layers = list(layers)
    try:
        groups = {g.producer: g for g in channel_groups(model)}
    except ValueError as exc:
        log.warning("stripe: dead filters' BNs are not zeroed: %s", exc)
        return {}
    return {name: groups[name].all_bns for name in layers
            if name in groups and not groups[name].coupled and groups[name].all_bns}


@torch.no_grad()
def silence_bns(bns: Iterable[nn.Module], dead: Tensor) -> None:
    """``gamma = beta = 0`` (and their gradients) at the ``dead`` channels of
    each BN: what the original's ``BatchNorm.update_mask`` does, so the channel
    of a filter without stripes is exactly zero and can be removed."""
    for bn in bns:
        for p in (bn.weight, bn.bias):
            if p is None:
                continue
            where = dead.to(p.device)  # masked_fill_: no host sync on a GPU
            p.masked_fill_(where, 0)
            if p.grad is not None:
                p.grad.masked_fill_(where, 0)


@torch.no_grad()
def remove_dead_filters(
    model: nn.Module, masks: Dict[str, Tensor], input_shape: Sequence[int],
    layers: Optional[Iterable[str]] = None,
) -> tuple[Dict[str, Tensor], Dict[str, list[int]], Dict[str, str]]:
    """Remove the filters of ``layers`` (default: every mask's layer) that keep
    no stripe, with their BN entries and the consumers' input channels
    (:func:`~.surgery.select_channels`), in place: the original's
    ``prune_out``/``prune_in``.

    A dead filter is removed only when that is exact: its channel group is not
    coupled (a residual add keeps ``conv2``'s channels, as the original does),
    and the channel reaches every consumer as exact zeros, checked by one
    forward (eval mode) of a random ``[2, *input_shape]`` input. That holds
    after training with :func:`silence_bns` (``gamma = beta = 0``) and ReLU-like
    activations; a channel whose BN still adds a constant stays, as a filter
    with no stripes. A layer keeps at least one filter.

    Returns ``(masks, removed, kept)``: the masks with the same selections
    (:func:`~.surgery.select_mask_channels`), ``{layer: removed filter
    indices}`` and ``{layer: why its dead filters stay}``.
    """
    names = list(masks) if layers is None else list(layers)
    dead = {name: dead_filters(masks[name]).cpu() for name in names}
    dead = {name: d for name, d in dead.items() if d.any()}
    kept: Dict[str, str] = {}
    if not dead:
        return dict(masks), {}, kept
    try:
        groups = {g.producer: g for g in channel_groups(model)}
    except ValueError as exc:
        return dict(masks), {}, {name: str(exc) for name in dead}
    candidates: Dict[str, ChannelGroup] = {}
    for name in dead:
        group = groups.get(name)
        if group is None:
            kept[name] = "not a Conv2d/Linear producer of the traced model"
        elif group.coupled:
            kept[name] = f"its channels are coupled ({group.reason})"
        elif not group.consumers:
            kept[name] = "its channels reach no layer that reads them"
        else:
            candidates[name] = group
    silent = _silent_channels(model, candidates, dead, input_shape)
    removed: Dict[str, list[int]] = {}
    masks = dict(masks)
    for name, group in candidates.items():
        removable = dead[name] & silent[name]
        if removable.all():  # keep one filter: a layer of no channels cannot be built
            removable[0] = False
        if (dead[name] & ~silent[name]).any():
            kept[name] = ("the channels of some filters without stripes are not zero after "
                          f"{', '.join(group.all_bns) or 'the layer'} (BN gamma/beta not zeroed)")
        if not removable.any():
            continue
        index = torch.nonzero(~removable).flatten()
        select_channels(model, group, index)
        masks = select_mask_channels(masks, group, index)
        removed[name] = torch.nonzero(removable).flatten().tolist()
        log.info("stripe: %s: removed %d filters without stripes", name, len(removed[name]))
    for name, why in kept.items():
        log.info("stripe: %s keeps filters without stripes: %s", name, why)
    return masks, removed, kept


def _silent_channels(model: nn.Module, groups: Dict[str, ChannelGroup], dead: Dict[str, Tensor],
                     input_shape: Sequence[int]) -> Dict[str, Tensor]:
    """Per producer, bool ``[C]``: the channel arrives at every consumer as
    exact zeros. A dead filter's channel does not depend on the input (its
    group is per channel), so one forward decides it."""
    seen: Dict[str, Tensor] = {}
    modules = dict(model.named_modules())

    def grab(name):
        def hook(module, args):
            seen[name] = args[0].detach()
        return hook

    consumers = {c for g in groups.values() for c in g.consumers}
    handles = [modules[c].register_forward_pre_hook(grab(c)) for c in consumers]
    was_training = model.training
    model.eval()
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(2, *input_shape, generator=gen)
        param = next(model.parameters(), None)
        if param is not None:
            x = x.to(param.device, param.dtype)
        model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    silent = {}
    for name, group in groups.items():
        ok = torch.ones(group.channels, dtype=torch.bool)
        for consumer, per_channel in group.consumers.items():
            x = seen.get(consumer)
            if x is None:  # not called: nothing is known
                ok[:] = False
                continue
            # [N, C, H, W] into a conv, [N, C * per_channel] into a Linear
            per = x.reshape(x.shape[0], group.channels, -1)
            ok &= (per == 0).all(dim=2).all(dim=0).cpu()
        silent[name] = ok
    return silent
