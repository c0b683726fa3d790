"""The sparsity kinds the library runs: one entry each, keyed by slug.

Whatever handles "any kind" looks the kind up here: the benchmark (its
``--kind`` and the ``kind`` of its records are the labels), export (the
``kind`` of an exported layer), the tests. A new kind is its format, ops and
module files (one per layer, named by its slug) plus one entry below.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from .formats.block1xn import Block1xN
from .formats.pattern import Pattern
from .formats.stripe import Stripe
from .nn.block1xn import Block1xNConv2d
from .nn.pattern import PatternConv2d
from .nn.stripe import StripeConv2d
from .ops.block1xn import block1xn_conv2d
from .ops.pattern import pattern_conv2d
from .ops.stripe import stripe_conv2d


class KindSpec(NamedTuple):
    slug: str  # the kind's name in files, ops and classes
    label: str  # as papers write it; the kind in benchmark records and exported files
    format: type  # a formats.base.SparseConvFormat subclass
    module: type  # an nn.base.SparseConv2d subclass
    conv2d: Callable  # the F.conv2d-like function taking the format


KINDS: dict[str, KindSpec] = {
    spec.slug: spec for spec in [
        KindSpec("block1xn", "1xN", Block1xN, Block1xNConv2d, block1xn_conv2d),
        KindSpec("stripe", "stripe", Stripe, StripeConv2d, stripe_conv2d),
        KindSpec("pattern", "pattern", Pattern, PatternConv2d, pattern_conv2d),
    ]
}


def by_label(label: str) -> KindSpec:
    """The kind written ``label`` (e.g. ``"1xN"``); a ValueError names the known ones."""
    for spec in KINDS.values():
        if spec.label == label:
            return spec
    raise ValueError(f"kind: expected one of {[s.label for s in KINDS.values()]}, got {label!r}")
