"""Physical filter rearrangement for 1xN pruning (Lin et al., TPAMI 2022).

The 1xN code's ``--rearrange`` sorts a layer's filters by L1 norm, ascending,
so each block of N consecutive output channels holds filters of similar
importance, but it does so virtually: the mask is scattered back to the
original order. Here, as in the paper, the permutation is applied for real to
the whole channel group (producer, its BN, any depthwise conv and its BN, the
consumers' input channels), which leaves the network function unchanged.

A group whose channels meet another producer's (a residual add, an SE gate)
is never permuted: that would need the same permutation on every tensor of the
add. So ResNet ``conv3``/``downsample.0`` and MobileNet projection layers that
feed a residual stay in place (the original code does rearrange
``downsample.0``, virtually).
"""
from __future__ import annotations

import logging
from typing import Iterable, Optional

import torch
from torch import Tensor, nn

from .channels import groups_by_producer
from .surgery import filter_l1_norms, select_channels

log = logging.getLogger("sparsekernels")


def rearrange_filters(
    model: nn.Module, layers: Optional[Iterable[str]] = None
) -> dict[str, Tensor]:
    """Sort the output channels of each producer in ``layers`` (default: all)
    by filter L1 norm, ascending (ties by position), in place.

    Returns ``{layer: perm}``: new channel ``i`` is old channel ``perm[i]``.
    Coupled layers are left as they are and logged with the reason (a warning
    when they were asked for by name).
    """
    if isinstance(layers, str):
        raise ValueError(f"layers: expected an iterable of layer names, got the string {layers!r}")
    requested = None if layers is None else list(layers)
    groups = groups_by_producer(model, requested or (), "layers")
    perms = {}
    for name in groups if requested is None else requested:
        group = groups[name]
        if group.coupled:
            level = logging.INFO if requested is None else logging.WARNING
            log.log(level, "rearrange: %s left in place: %s", name, group.reason)
            continue
        perm = torch.argsort(filter_l1_norms(model.get_submodule(name)), stable=True)
        select_channels(model, group, perm)
        perms[name] = perm
        log.debug("rearrange: %s filters sorted by L1 norm", name)
    return perms
