"""The pruning methods as training hooks: one small adapter per method that
ties a ``sparsekernels.pruning`` component to the training loop.

Every method runs the same pipeline (``pipeline.run``):

1. ``prepare(model)``: prune once or attach what training needs (masks,
   skeletons, dynamic convs), before the first fine-tuning epoch;
2. fine-tune with the method as a ``TrainHooks`` (schedules step at epoch
   starts, regularisers edit gradients, an optimizer of its own);
3. ``finalize(model)``: make the sparsity final (squash masks, fold
   skeletons, the final magnitude prune, slice channels);
4. when ``retrain`` is set (filter methods), fine-tune the smaller network
   again, or train it from scratch (scratch-E / scratch-B).

``masks(model)`` names, per pruned layer, the weight entries that are kept;
``sparse_layers(model)`` says which of them become which kind's sparse module
(``kinds.KINDS``), which is all ``export`` asks.
"""
from __future__ import annotations

import fnmatch
import json
import logging
from typing import Any, Callable, NamedTuple, Optional

from torch import Tensor, nn

from ..pruning.base import is_depthwise
from ..pruning.block1xn import Block1xNSparsifier, block1xn_config
from ..pruning.dppnet import convert_to_dpp, dpp_regularizer, dpp_sparsity
from ..pruning.filter_prune import L1_PRESETS, prune_filters_l1
from ..pruning.gsm import GSMSGD, gsm_final_prune
from ..pruning.magnitude import MagnitudeSparsifier, magnitude_config
from ..pruning.pattern import PatternSparsifier, pattern_config
from ..pruning.rearrange import rearrange_filters
from ..pruning.schedule import ScheduledPruning, SparsitySchedule
from ..pruning.slimming import SlimmingRegularizer, slim
from ..pruning.stripe import (
    SkeletonRegularizer, attach_skeletons, dead_filters, fold_skeletons, following_bns,
    silence_bns, skeleton_modules,
)
from .config import RunConfig
from .loop import TrainHooks

log = logging.getLogger("sparsekernels")


def _schedule(cfg: RunConfig) -> SparsitySchedule:
    return SparsitySchedule(
        init_sparsity=cfg.init_sparsity if cfg.inter_func != "one_shot" else 0.0,
        final_sparsity=cfg.pr_target, start_epoch=cfg.start_epoch,
        end_epoch=max(cfg.end_epoch, cfg.start_epoch), update_frequency=cfg.update_frequency,
        inter_func=cfg.inter_func,
    )


def zero_fraction(tensors) -> float:
    """Fraction of exact zeros over ``tensors``: how sparsity is reported."""
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    return sum(int((t == 0).sum()) for t in tensors) / total if total else 0.0


class LayerSpec(NamedTuple):
    """One layer ``export`` turns into a sparse module."""

    kind: str  # a ``kinds.KINDS`` slug
    mask: Tensor  # kept weights, the weight's shape
    params: dict[str, int]  # the kind's own parameters (its format's PARAMS), e.g. {"n": 4}


class Method(TrainHooks):
    """No pruning: the dense baseline."""

    retrain = False
    # The KINDS slug of the sparse modules this method's masks become (None:
    # the model stays dense, masked zeros included).
    kind: Optional[str] = None
    # export removes filters left without any kept weight (the stripe seed
    # code's prune_out/prune_in) where that is exact.
    removes_dead_filters = False

    def __init__(self, cfg: RunConfig):
        self.cfg = cfg

    def prepare(self, model: nn.Module) -> nn.Module:
        return model

    def finalize(self, model: nn.Module) -> nn.Module:
        return model

    def optimizer_factory(self) -> Optional[Callable]:
        return None

    def masks(self, model: nn.Module) -> dict[str, Tensor]:
        return {}

    def kind_params(self) -> dict[str, int]:
        """The parameters of :attr:`kind` this run's layers have (e.g. N)."""
        return {}

    def sparse_layers(self, model: nn.Module,
                      masks: Optional[dict[str, Tensor]] = None) -> dict[str, LayerSpec]:
        """``{layer: LayerSpec}`` for each masked ``nn.Conv2d`` that becomes a
        sparse module of :attr:`kind` (``masks``: default :meth:`masks`, or
        those a saved model holds). Other masked layers stay dense."""
        if self.kind is None:
            return {}
        masks = self.masks(model) if masks is None else masks
        params = self.kind_params()
        return {name: LayerSpec(self.kind, mask, dict(params)) for name, mask in masks.items()
                if type(model.get_submodule(name)) is nn.Conv2d}

    def saved_extras(self) -> dict[str, Any]:
        """Extra entries for ``pruned.pt``: what ``load_model`` needs besides
        the arch to rebuild the model, or what a future format is built from."""
        return {}

    def pruned_weights(self, model: nn.Module) -> list[Tensor]:
        """The weights whose zeros count towards this method's sparsity."""
        return [model.get_submodule(name).weight for name in self.masks(model)]

    def sparsity(self, model: nn.Module) -> Optional[float]:
        weights = self.pruned_weights(model)
        return zero_fraction(w.detach() for w in weights) if weights else None


class MaskMethod(Method):
    """A torch.ao sparsifier driven by one SparseML-style schedule."""

    def make_sparsifier(self):
        raise NotImplementedError

    def layer_config(self, model: nn.Module) -> list[dict]:
        raise NotImplementedError

    def prepare(self, model):
        self.sparsifier = self.make_sparsifier()
        self.config = self.layer_config(model)
        self.sparsifier.prepare(model, self.config)
        self.scheduler = ScheduledPruning(self.sparsifier, _schedule(self.cfg))
        return model

    def on_epoch_start(self, epoch, model):
        self.scheduler.step(epoch)
        self.sparsifier.step()

    def finalize(self, model):
        self._final_masks = self.masks(model)  # squash_mask drops the parametrizations
        self.sparsifier.squash_mask()
        return model

    def masks(self, model):
        if hasattr(self, "_final_masks"):
            return self._final_masks
        return {group["module_fqn"]: self.sparsifier.mask_of(group["module"], "weight").bool()
                for group in self.sparsifier.groups}

    def state_dict(self):
        return {"sparsifier": self.sparsifier.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state):
        self.sparsifier.load_state_dict(state["sparsifier"])
        self.scheduler.load_state_dict(state["scheduler"])


class BlockMethod(MaskMethod):
    """1xN blocks (Lin et al.), optionally after physical filter rearrangement."""

    kind = "block1xn"

    def kind_params(self):
        return {"n": self.cfg.N}

    def make_sparsifier(self):
        return Block1xNSparsifier(n=self.cfg.N, criterion=self.cfg.criterion,
                                  seed=self.cfg.seed, pad_partial=self.cfg.pad_partial)

    def layer_config(self, model):
        return block1xn_config(model, n=self.cfg.N, sparsity=self.cfg.pr_target,
                                prune_classifier=self.cfg.full, prune_stem=self.cfg.prune_stem,
                                exclude=self.cfg.exclude)

    def prepare(self, model):
        if self.cfg.rearrange:
            rearrange_filters(model)
        return super().prepare(model)


class PatternMethod(MaskMethod):
    """PatDNN kernel patterns + connectivity pruning; export builds each
    layer's pattern format from its kept mask (the library is then the
    distinct kept kernel masks: the saved library's used patterns)."""

    kind = "pattern"

    def saved_extras(self):
        # Each layer's library [k, Kh, Kw] and per-kernel pattern ids (-1:
        # dropped): what the pattern sparse format will be built from.
        return {"patterns": {
            fqn.removesuffix(".weight"): {"library": state["pattern_library"],
                                          "pattern_id": state["pattern_id"]}
            for fqn, state in self.sparsifier.state.items() if "pattern_library" in state}}

    def make_sparsifier(self):
        return PatternSparsifier(num_patterns=self.cfg.num_patterns,
                                 entries=self.cfg.pattern_entries)

    def layer_config(self, model):
        return pattern_config(model, sparsity=self.cfg.pr_target, prune_stem=self.cfg.prune_stem,
                              exclude=self.cfg.exclude)


class MagnitudeMethod(MaskMethod):
    def make_sparsifier(self):
        return MagnitudeSparsifier(scope="global")

    def layer_config(self, model):
        return magnitude_config(model, sparsity=self.cfg.pr_target, include_linear=self.cfg.full)


class StripeMethod(Method):
    """Filter Skeleton: learn per-stripe scales with an L1 pull, zero the
    stripes below the threshold (or the smallest ones to the scheduled level
    when ``stripe_target``), fold the skeleton into the weight at the end.

    As the original, a filter left without stripes has ``gamma = beta = 0``
    in the BNs after it (when its channels can be removed: not ``conv2`` of a
    residual block), after every backward and every optimizer step (so
    momentum cannot bring them back) and once more at the end; ``export``
    then removes such filters."""

    kind = "stripe"
    removes_dead_filters = True

    def prepare(self, model):
        layers = _exclude_stem(model, self.cfg)
        bns = following_bns(model, layers)  # traced before the skeletons couple the convs
        self.skeletons = attach_skeletons(model, layers)
        modules = skeleton_modules(model)
        self._silenced = [(name, modules[name], [model.get_submodule(b) for b in names])
                          for name, names in bns.items()]
        target = self.cfg.pr_target if self.cfg.stripe_target else None
        self.regularizer = SkeletonRegularizer(model, sr=self.cfg.sr,
                                               threshold=self.cfg.threshold, target=target,
                                               scope="layer")
        self.schedule = _schedule(self.cfg)
        return model

    def on_epoch_start(self, epoch, model):
        if self.cfg.stripe_target:
            self.regularizer.set_level(self.schedule.level(epoch))

    def after_backward(self, model, optimizer):
        self.regularizer.apply()
        self._silence()

    def after_step(self, model):
        self._silence()

    def _silence(self):
        for _, skeleton, bns in self._silenced:  # every step: no host sync
            silence_bns(bns, dead_filters(skeleton.keep))

    def finalize(self, model):
        self._final_masks = {
            name: mask.unsqueeze(1).expand(model.get_submodule(name).weight.shape).clone()
            for name, mask in fold_skeletons(model).items()
        }
        # A filter whose folded stripes are all zero is dead even where
        # ``keep`` still holds a stripe whose FS reached exactly 0.
        for name, _, bns in self._silenced:
            dead = dead_filters(self._final_masks[name])
            if dead.any():
                silence_bns(bns, dead)
        return model

    def masks(self, model):
        return getattr(self, "_final_masks", {})

    def sparsity(self, model):
        if hasattr(self, "_final_masks"):
            return super().sparsity(model)
        fs = [p.detach() for p in self.skeletons.values()]
        return zero_fraction(fs)


class DPPMethod(Method):
    def prepare(self, model):
        self.layers = convert_to_dpp(model, num_patterns=self.cfg.dpp_patterns)
        return model

    def saved_extras(self):
        # load_model rebuilds these layers as DPPConv2d before loading weights.
        return {"dpp_layers": json.dumps({"layers": self.layers,
                                          "num_patterns": self.cfg.dpp_patterns})}

    def extra_loss(self, model):
        return dpp_regularizer(model, self.cfg.alpha)

    def sparsity(self, model):
        return dpp_sparsity(model)


class GSMMethod(Method):
    """GSM trains with its own optimizer, then prunes by magnitude globally."""

    def optimizer_factory(self):
        ratio, momentum = 1.0 - self.cfg.pr_target, self.cfg.gsm_momentum

        def make(params, lr, momentum_, weight_decay, nesterov):
            return GSMSGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                          nesterov=nesterov, nonzero_ratio=ratio)

        return make

    def finalize(self, model):
        masks = gsm_final_prune(model, 1.0 - self.cfg.pr_target)  # keyed by parameter name
        self._final_masks = {name.removesuffix(".weight"): m for name, m in masks.items()}
        return model

    def masks(self, model):
        return getattr(self, "_final_masks", {})


class L1FilterMethod(Method):
    """Prune filters by L1 norm to a smaller dense net, then fine-tune (or
    scratch): ``pr_target`` of every prunable layer, or the per-layer ratios of
    ``l1_preset`` (``filter_prune.L1_PRESETS``)."""

    retrain = True

    def finalize(self, model):
        before = _out_channels(model)
        # A preset (the Rethinking scripts' per-layer ratios) replaces pr_target.
        ratios = L1_PRESETS[self.cfg.l1_preset] if self.cfg.l1_preset else self.cfg.pr_target
        kept = prune_filters_l1(model, ratios, skip=self.cfg.exclude)
        self._channels = _removed_fraction(before, kept)
        return model

    def sparsity(self, model):
        """Fraction of the pruned layers' channels removed."""
        return getattr(self, "_channels", None)


class SlimmingMethod(Method):
    """Train with L1 on BN gamma, cut the smallest gammas globally, re-train."""

    retrain = True

    def prepare(self, model):
        self.regularizer = SlimmingRegularizer(model, s=self.cfg.slim_s)
        return model

    def after_backward(self, model, optimizer):
        self.regularizer.apply()

    def finalize(self, model):
        before = _out_channels(model)
        self._channels = _removed_fraction(before, slim(model, self.cfg.pr_target))
        return model

    def sparsity(self, model):
        """Fraction of the scored (BN-scaled) channels removed."""
        return getattr(self, "_channels", None)


def _out_channels(model: nn.Module) -> dict[str, int]:
    return {name: m.weight.shape[0] for name, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}


def _removed_fraction(before: dict[str, int], kept: dict[str, Tensor]) -> float:
    total = sum(before[name] for name in kept)
    return 1.0 - sum(len(index) for index in kept.values()) / total if total else 0.0


def _exclude_stem(model: nn.Module, cfg: RunConfig) -> list[str]:
    """Conv layers the stripe method regularises: all but the depthwise ones,
    the stem unless asked, and the caller's exclusions."""
    convs = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    names = []
    for i, (name, conv) in enumerate(convs):
        if is_depthwise(conv):
            continue
        if i == 0 and not cfg.prune_stem:
            continue
        if any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            continue
        names.append(name)
    return names


METHOD_CLASSES = {
    "dense": Method, "1xn": BlockMethod, "pattern": PatternMethod,
    "magnitude": MagnitudeMethod, "stripe": StripeMethod, "dppnet": DPPMethod,
    "gsm": GSMMethod, "l1_filter": L1FilterMethod, "slimming": SlimmingMethod,
}


def make_method(cfg: RunConfig) -> Method:
    return METHOD_CLASSES[cfg.method](cfg)
