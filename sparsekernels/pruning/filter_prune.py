"""L1-norm filter pruning (Li et al., ICLR 2017) to a smaller dense network.

Per layer, the filters with the largest sum of |W| are kept and the network is
physically narrowed across the whole channel group (producer, BNs, depthwise
convs, consumers), as in ``Eric-mingjie/rethinking-network-pruning``
(cifar/l1-norm-pruning).

``L1_PRESETS`` holds that repository's CIFAR settings as ratios per module name
of this package's zoo (``sparsekernels.models``):

- ``vgg16_bn-A`` (vggprune.py): cfg ``[32, 64, M, 128, 128, M, 256 x3, M, 256 x3,
  M, 256 x3]``, i.e. the first conv (``features.0``) and the last six convs
  (``features.24`` ... ``features.40``) halved.
- ``resnet{56,110}-{A,B}`` (res56prune.py, res110prune.py): only ``conv1`` of
  each BasicBlock is pruned, at one ratio per stage, except the skipped layers.
  The scripts number every Conv2d of the model from 1 in module order, with the
  stem as 1 and no conv in the shortcut, so the conv1 of the ``b``-th block of
  the whole net (0-based) is layer ``2 + 2b``:

  ======  ====================  ===================================================
  preset  stage ratios          skipped layer ids -> module names
  ======  ====================  ===================================================
  56-A    0.1, 0.1, 0.1         16, 20, 38, 54 -> layer1.7, layer2.0, layer3.0,
                                layer3.8 (``.conv1``)
  56-B    0.6, 0.3, 0.1         16, 18, 20, 34, 38, 54 -> layer1.7, layer1.8,
                                layer2.0, layer2.7, layer3.0, layer3.8
  110-A   0.5, 0, 0             36 -> layer1.17
  110-B   0.5, 0.4, 0.3         36, 38, 74 -> layer1.17, layer2.0, layer3.0
  ======  ====================  ===================================================

  The scripts keep ``int(C * (1 - p))`` filters; :func:`prune_filters_l1`
  rounds, which would keep one more filter in several stages (32 * 0.9 = 28.8).
  The presets therefore store the exact fractions the scripts prune
  (``1 - int(C * (1 - p)) / C``, e.g. 0.125 for 32 channels at p = 0.1), so they
  rebuild the papers' architectures.

``L1_PRESET_ARCHS`` names the zoo architecture each preset is for (the CLI's
``--l1_preset`` is checked against ``--arch``).
"""
from __future__ import annotations

import fnmatch
import logging
from typing import Iterable, Mapping, Union

import torch
from torch import Tensor, nn

from ..models.vgg import VGG16_CFG
from .channels import ChannelGroup, channel_groups
from .surgery import filter_l1_norms, select_channels

log = logging.getLogger("sparsekernels")


def prune_filters_l1(
    model: nn.Module, ratios: Union[float, Mapping[str, float]], skip: Iterable[str] = ()
) -> dict[str, Tensor]:
    """Prune the fraction ``ratio`` of each producer's filters with the smallest
    L1 norm (keeping ``max(1, round(C * (1 - ratio)))``), in place.

    ``ratios`` is one ratio for every prunable layer, Linear producers (their
    neurons) included; coupled ones are logged and left whole. Or it maps
    layer-name patterns (fnmatch; the first match wins) to ratios; a layer it
    selects must not be coupled. ``skip`` lists layer-name patterns never
    pruned. Returns ``{layer: kept channel indices}`` in increasing order.
    """
    if isinstance(skip, str):
        raise ValueError(
            f"skip: expected an iterable of layer-name patterns, got the string {skip!r}")
    skip = list(skip)
    plan = _plan(channel_groups(model), ratios, skip)
    # Every layer is ranked on the unpruned weights (Li et al.'s "independent"
    # strategy, as the Rethinking scripts do): slicing one layer first would
    # change the norms of the next, whose input channels it removes.
    kept = {}
    for group, ratio in plan:
        norms = filter_l1_norms(model.get_submodule(group.producer))
        keep = max(1, round(len(norms) * (1 - ratio)))
        largest = torch.argsort(norms, descending=True, stable=True)[:keep]
        kept[group.producer] = largest.sort().values
        log.info("l1 filter pruning: %s keeps %d of %d filters", group.producer, keep, len(norms))
    for group, _ in plan:
        if len(kept[group.producer]) < group.channels:
            select_channels(model, group, kept[group.producer])
    return kept


def _plan(groups: list[ChannelGroup], ratios, skip: list[str]) -> list[tuple[ChannelGroup, float]]:
    """The layers to prune and their ratios, in graph order."""
    free = [g for g in groups if not any(fnmatch.fnmatchcase(g.producer, p) for p in skip)]
    if not isinstance(ratios, Mapping):
        _check_ratio(ratios, "ratios")
        for g in free:
            if g.coupled:
                log.info("l1 filter pruning: %s left whole: %s", g.producer, g.reason)
        return [(g, ratios) for g in free if not g.coupled and ratios > 0]
    for pattern, ratio in ratios.items():
        _check_ratio(ratio, f"ratios[{pattern!r}]")
        if not any(fnmatch.fnmatchcase(g.producer, pattern) for g in groups):
            raise ValueError(f"ratios: {pattern!r} matches no Conv2d/Linear producer of the model")
    plan = []
    for g in free:
        ratio = next((r for p, r in ratios.items() if fnmatch.fnmatchcase(g.producer, p)), 0)
        if ratio > 0 and g.coupled:
            raise ValueError(
                f"ratios: {g.producer} cannot be pruned: its output channels are coupled "
                f"({g.reason})")
        if ratio > 0:
            plan.append((g, ratio))
    return plan


def _check_ratio(ratio, argument: str) -> None:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
        raise ValueError(f"{argument}: expected a pruning ratio in [0, 1], got {ratio!r}")


def _cifar_resnet_preset(depth: int, stage_ratios, skipped_ids) -> dict[str, float]:
    blocks = (depth - 2) // 6
    preset = {}
    for stage, p in enumerate(stage_ratios):
        channels = 16 * 2 ** stage
        kept = int(channels * (1 - p))  # the scripts' truncation
        for block in range(blocks):
            layer_id = 2 + 2 * (stage * blocks + block)
            if p > 0 and layer_id not in skipped_ids:
                preset[f"layer{stage + 1}.{block}.conv1"] = 1 - kept / channels
    return preset


def _vgg_preset(cfg, pruned: dict[int, float]) -> dict[str, float]:
    """``pruned`` maps the i-th conv (0-based) to its ratio; module indices
    follow ``CifarVGG``: conv, BN, ReLU per width and one max-pool per "M"."""
    names, position = [], 0
    for c in cfg:
        if c == "M":
            position += 1
            continue
        names.append(f"features.{position}")
        position += 3
    return {names[i]: ratio for i, ratio in pruned.items()}


L1_PRESETS: dict[str, dict[str, float]] = {
    "vgg16_bn-A": _vgg_preset(VGG16_CFG, {0: 0.5, **{i: 0.5 for i in range(7, 13)}}),
    "resnet56-A": _cifar_resnet_preset(56, (0.1, 0.1, 0.1), {16, 20, 38, 54}),
    "resnet56-B": _cifar_resnet_preset(56, (0.6, 0.3, 0.1), {16, 18, 20, 34, 38, 54}),
    "resnet110-A": _cifar_resnet_preset(110, (0.5, 0.0, 0.0), {36}),
    "resnet110-B": _cifar_resnet_preset(110, (0.5, 0.4, 0.3), {36, 38, 74}),
}

# The zoo architecture whose module names each preset uses.
L1_PRESET_ARCHS: dict[str, str] = {name: name.split("-")[0] for name in L1_PRESETS}
