"""The base every mask pruner of this package builds on.

- :class:`MaskSparsifier`: ``torch.ao.pruning.BaseSparsifier`` plus settings
  validation at ``prepare`` and a ``state_dict`` that
  ``torch.load(weights_only=True)`` (what training checkpoints use) accepts;
  its masks are :class:`SavedMask` parametrizations.
- :func:`pruned_count`: how a level becomes a count (round half up, the same
  rule as ``Block1xN.from_dense``), so every pruner agrees on "exact", and
  :func:`smallest`, the exact-count selection with ties broken by position.
- :func:`check_level`, :func:`check_positive_int`, :func:`check_conv_or_linear`:
  the settings checks, with the argument named in the error.
- :func:`select_layers` and :func:`paper_skip_rule`: config building with a
  log line for every layer left dense.
"""
from __future__ import annotations

import fnmatch
import logging
import math
from typing import Callable, Iterable, Mapping, Optional

import torch
from torch import Tensor, nn
from torch.ao.pruning import BaseSparsifier, FakeSparsity
from torch.nn.utils import parametrize

from ..layer_select import Sparsity, is_depthwise, level_for

log = logging.getLogger("sparsekernels")

SkipRule = Callable[[str, nn.Module], Optional[str]]


def pruned_count(total: int, level: float) -> int:
    """Entries to prune out of ``total`` at ``level``: ``round(total*level)``,
    halves rounded up exactly as ``Block1xN.from_dense`` does."""
    return int(math.floor(total * level + 0.5))


def smallest(scores: Tensor, count: int) -> Tensor:
    """Bool keep-mask over 1-D ``scores`` that drops exactly ``count`` of the
    smallest. Ties at the threshold are dropped in position order, so the
    result does not depend on the sort kernel."""
    keep = torch.ones_like(scores, dtype=torch.bool)
    if count == 0:
        return keep
    threshold = scores.kthvalue(count).values
    below = scores < threshold
    at_threshold = torch.nonzero(scores == threshold).flatten()
    keep[below] = False
    keep[at_threshold[: count - int(below.sum())]] = False
    return keep


def check_level(level, where: str) -> None:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0.0 <= level < 1.0:
        raise ValueError(f"{where}: expected a sparsity level in [0, 1), got {level!r}")


def check_positive_int(value, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where}: expected an int >= 1, got {value!r}")


def check_conv_or_linear(group: dict, method: str) -> None:
    module, fqn = group["module"], group["tensor_fqn"]
    if not isinstance(module, (nn.Conv2d, nn.Linear)) or group["tensor_name"] != "weight":
        raise ValueError(
            f"{fqn}: {method} prunes the weight of a Conv2d or Linear, "
            f"got {group['tensor_name']!r} of {type(module).__name__}"
        )


def as_conv_weight(weight: Tensor) -> Tensor:
    """A Linear weight ``[out, in]`` viewed as a 1x1 conv weight ``[out, in, 1, 1]``."""
    return weight if weight.dim() == 4 else weight.view(*weight.shape, 1, 1)


def conv_groups(module: nn.Module) -> int:
    return module.groups if isinstance(module, nn.Conv2d) else 1


class SavedMask(FakeSparsity):
    """``FakeSparsity`` whose mask is part of the model's ``state_dict``:
    FakeSparsity leaves it out, so a training checkpoint would resume with
    the model unable to load (missing keys) or, loaded loosely, dense."""

    state_dict = nn.Module.state_dict


class MaskSparsifier(BaseSparsifier):
    """``BaseSparsifier`` with the checks and serialisation every pruner here needs.

    Subclasses validate each group in :meth:`check_group` (run by ``prepare``
    before any parametrization is registered, so a bad layer fails early and
    leaves the model untouched) and write masks with :meth:`set_mask`.
    """

    def check_group(self, group: dict) -> None:
        check_level(group["sparsity_level"], f"{group['tensor_fqn']}: sparsity_level")

    def _prepare(self, *args, **kwargs):
        for group in self.groups:
            self.check_group(group)
        for group in self.groups:  # BaseSparsifier._prepare, with a mask that is saved
            module, name = group["module"], group["tensor_name"]
            mask = torch.ones_like(getattr(module, name))
            self.state[group["tensor_fqn"]]["mask"] = mask
            parametrize.register_parametrization(module, name, SavedMask(mask))

    @staticmethod
    def mask_of(module: nn.Module, tensor_name: str) -> Tensor:
        """The FakeSparsity mask the parametrization multiplies the tensor by."""
        return next(p.mask for p in module.parametrizations[tensor_name] if isinstance(p, FakeSparsity))

    def set_mask(self, module: nn.Module, tensor_name: str, keep: Tensor) -> None:
        """Copy ``keep`` into the mask in place: the parametrization holds that
        tensor (and its device), so it must not be replaced."""
        mask = self.mask_of(module, tensor_name)
        mask.copy_(keep.reshape(mask.shape))

    def state_dict(self) -> dict:
        """BaseSparsifier's state_dict with plain dicts (its defaultdict is
        refused by ``torch.load(weights_only=True)``, which training
        checkpoints use) and every mask read from the model: BaseSparsifier
        drops masks from its state when it loads one, so a checkpoint saved
        after a resume would otherwise lose them."""
        full = super().state_dict()
        state = {fqn: dict(s) for fqn, s in full["state"].items()}
        for group in self.groups:
            mask = self.mask_of(group["module"], group["tensor_name"])
            state.setdefault(group["tensor_fqn"], {})["mask"] = mask
        return {"state": state, "groups": full["groups"]}

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> None:
        """BaseSparsifier's load for a prepared model, except that masks are
        copied into the existing ones (so they stay on the model's device) and
        ``state_dict`` itself is left unchanged (the base pops its masks)."""
        saved = state_dict["state"]
        states = {fqn: {k: v for k, v in s.items() if k != "mask"} for fqn, s in saved.items()}
        super().load_state_dict({"state": states, "groups": state_dict["groups"]}, strict)
        for group in self.groups:
            mask = saved.get(group["tensor_fqn"], {}).get("mask")
            if mask is not None:
                self.set_mask(group["module"], group["tensor_name"], mask)


# ---- config building ------------------------------------------------------

def select_layers(
    model: nn.Module,
    sparsity: Sparsity,
    skip_rule: SkipRule,
    *,
    exclude: Iterable[str] = (),
    caller: str,
) -> list[dict]:
    """Config entries ``{"tensor_fqn": "<layer>.weight", "sparsity_level": s}``
    for the Conv2d and Linear layers of ``model``, in module order.

    ``sparsity`` is one target for every layer or a mapping from layer-name
    patterns (fnmatch) to targets, first match wins. A layer is left dense when
    it matches an ``exclude`` pattern, when ``skip_rule(name, module)`` gives a
    reason, or when no pattern matches; each such layer is logged at INFO on
    the ``sparsekernels`` logger with the reason.
    """
    targets = sparsity.items() if isinstance(sparsity, Mapping) else [("sparsity", sparsity)]
    for key, level in targets:
        check_level(level, f"sparsity[{key!r}]" if isinstance(sparsity, Mapping) else "sparsity")
    exclude = list(exclude)
    config = []
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        level = level_for(name, sparsity)
        if any(fnmatch.fnmatchcase(name, pattern) for pattern in exclude):
            reason = "excluded by the caller"
        else:
            reason = skip_rule(name, module)
        if reason is None and level is None:
            reason = "no sparsity level matches its name"
        if reason is not None:
            log.info("%s: %s left dense: %s", caller, name, reason)
            continue
        config.append({"tensor_fqn": f"{name}.weight", "sparsity_level": float(level)})
    return config


def paper_skip_rule(
    model: nn.Module, *, prune_classifier: bool, prune_stem: bool, image_channels: Optional[int] = None
) -> SkipRule:
    """The layers the structured-pruning papers (1xN, PatDNN) leave dense.

    - the stem: the first Conv2d in module order whose ``in_channels`` is the
      image's (``image_channels``; None = the first conv's ``in_channels``),
      unless ``prune_stem``;
    - depthwise convs (no input channel is shared between outputs);
    - the classifier, the last Linear in module order, unless
      ``prune_classifier``; any other Linear always.
    """
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if image_channels is None and convs:
        image_channels = convs[0][1].in_channels
    stem = next((n for n, m in convs if m.in_channels == image_channels), None)
    if stem is None and not prune_stem:
        log.info("paper_skip_rule: no conv takes %s input channels: no stem left dense", image_channels)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    classifier = linears[-1] if linears else None

    def reason(name: str, module: nn.Module) -> Optional[str]:
        if isinstance(module, nn.Linear):
            if name != classifier:
                return "a Linear layer other than the classifier (the last Linear)"
            return None if prune_classifier else "the classifier (prune_classifier=False)"
        if name == stem and not prune_stem:
            return f"the stem (first conv on the {image_channels}-channel image; prune_stem=False)"
        if is_depthwise(module):
            return "depthwise conv (one input channel per group: nothing to share)"
        return None

    return reason
