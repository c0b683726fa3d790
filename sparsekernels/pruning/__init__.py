"""Pruning methods, one module each; every name below is importable from here.

=================================  ========================================
method                             module
=================================  ========================================
1xN blocks                         :mod:`.block1xn`
kernel patterns (PatDNN)           :mod:`.pattern`
unstructured magnitude             :mod:`.magnitude`
Filter Skeleton stripes            :mod:`.stripe`
DPPNet dynamic patterns            :mod:`.dppnet`
Global Sparse Momentum (GSM)       :mod:`.gsm`
filter rearrangement               :mod:`.rearrange`
L1-norm filter pruning             :mod:`.filter_prune`
network slimming                   :mod:`.slimming`
scratch-E/B retraining             :mod:`.scratch`
sparsity schedules                 :mod:`.schedule`
channel graph and surgery          :mod:`.channels`, :mod:`.surgery`
shared base of the mask pruners    :mod:`.base`
=================================  ========================================

Names load their module on first use, so that importing one method does not
pull torch.fx and the model zoo in with it.
"""
from __future__ import annotations

import importlib

_EXPORTS = {
    "base": ("MaskSparsifier", "SavedMask", "Sparsity", "is_depthwise", "paper_skip_rule",
             "pruned_count", "select_layers", "smallest"),
    "block1xn": ("Block1xNSparsifier", "block1xn_config", "layer_seed"),
    "pattern": ("PatternSparsifier", "assign_patterns", "dropped_kernel_count", "pattern_config"),
    "magnitude": ("MagnitudeSparsifier", "magnitude_config"),
    "stripe": ("FilterSkeleton", "SkeletonRegularizer", "attach_skeletons", "fold_skeletons",
               "skeleton_modules", "stripe_sparsity"),
    "dppnet": ("DPPConv2d", "DPPExport", "convert_to_dpp", "dpp_regularizer", "dpp_sparsity"),
    "gsm": ("GSMSGD", "gsm_final_prune", "is_prunable", "masked_gradient"),
    "rearrange": ("rearrange_filters",),
    "filter_prune": ("L1_PRESETS", "prune_filters_l1"),
    "slimming": ("SlimmingRegularizer", "channel_sparsity", "scaling_bns", "slim"),
    "scratch": ("reinitialize", "scratch_epochs"),
    "schedule": ("ScheduledPruning", "SparsitySchedule"),
    "channels": ("ChannelGroup", "channel_groups", "groups_by_producer"),
    "surgery": ("filter_l1_norms", "select_channels"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    if name not in _MODULE_OF:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
