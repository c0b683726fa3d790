"""1xN block pruning (Lin et al., TPAMI 2022; ``lmbxmu/1xN``) as a torch.ao sparsifier.

A block is N consecutive output channels of one group x one input channel x
the whole kernel. Each layer's mask is ``Block1xN.from_dense(...).mask()``, so
it is exactly what the sparse format (and kernel) will encode. A level is a
fraction of *blocks*: ``round(num_blocks * level)`` blocks are pruned (halves
up), where a padded last block row counts as whole blocks. A Linear layer is
pruned as the 1x1 conv ``weight.view(out, in, 1, 1)``, as the 1xN code builds
its FC.

Fixed against the original (seeds.md section 1):

- ``criterion="random"`` samples blocks without replacement (``torch.randint``
  samples with replacement, so it pruned fewer blocks than asked), from a
  stream seeded by ``seed`` and the layer name, so layers of one shape do not
  share a prune pattern;
- bias-less convs work (the original sets ``bias.requires_grad``, which fails
  on ResNet-50's ``bias=None`` convs);
- blocks never wrap across input channels when N does not divide
  ``Cout/groups``: such a layer is rejected, or (``pad_partial=True``) gets the
  format's padded last block row;
- the classifier is pruned only when asked (the original prunes ResNet-50's FC
  even without ``--full``).
"""
from __future__ import annotations

import zlib
from typing import Iterable, Optional

from torch import nn

from ..formats.block1xn import CRITERIA, Block1xN
from .base import (
    MaskSparsifier,
    Sparsity,
    as_conv_weight,
    check_conv_or_linear,
    check_level,
    check_positive_int,
    conv_groups,
    paper_skip_rule,
    select_layers,
)


def _check_settings(n, criterion, where: str) -> None:
    check_positive_int(n, f"{where}n")
    if criterion not in CRITERIA:
        raise ValueError(f"{where}criterion: expected one of {CRITERIA}, got {criterion!r}")


def layer_seed(seed: Optional[int], tensor_fqn: str) -> int:
    """The random criterion's seed for one layer: ``seed`` (None = 0, as the
    format) mixed with a stable hash of the layer name."""
    return (0 if seed is None else seed) + zlib.crc32(tensor_fqn.encode())


class Block1xNSparsifier(MaskSparsifier):
    """Prunes each configured layer to 1xN blocks at its ``sparsity_level``.

    Settings (defaults here, overridable per config entry): ``n`` block height
    (any int >= 1; the paper uses 2..32), ``criterion`` ``"l1"`` (smallest
    block sum of ``|w|`` first) or ``"random"``, ``seed`` for ``"random"``,
    ``pad_partial``: whether a layer whose ``out_channels/groups`` is not a
    multiple of N gets a padded last block row (True) or is rejected at
    ``prepare`` with a ValueError (False).
    """

    def __init__(
        self,
        n: int,
        *,
        sparsity_level: float = 0.5,
        criterion: str = "l1",
        seed: Optional[int] = 0,
        pad_partial: bool = False,
    ):
        _check_settings(n, criterion, "")
        check_level(sparsity_level, "sparsity_level")
        super().__init__(defaults={
            "sparsity_level": sparsity_level, "n": n, "criterion": criterion,
            "seed": seed, "pad_partial": pad_partial,
        })

    def check_group(self, group: dict) -> None:
        super().check_group(group)
        fqn = group["tensor_fqn"]
        check_conv_or_linear(group, "1xN pruning")
        _check_settings(group["n"], group["criterion"], f"{fqn}: ")
        module, n = group["module"], group["n"]
        cout_per_group = module.weight.shape[0] // conv_groups(module)
        if cout_per_group % n and not group["pad_partial"]:
            raise ValueError(
                f"{fqn}: out_channels/groups={cout_per_group} is not a multiple of n={n}; "
                f"pass pad_partial=True for a padded last block row, or exclude the layer"
            )

    def update_mask(self, module: nn.Module, tensor_name: str, *, tensor_fqn: str,
                    sparsity_level: float, n: int, criterion: str, seed: Optional[int], **kwargs):
        weight = as_conv_weight(getattr(module, tensor_name))
        block = Block1xN.from_dense(
            weight, n, sparsity_level, criterion, groups=conv_groups(module),
            seed=layer_seed(seed, tensor_fqn),
        )
        self.set_mask(module, tensor_name, block.mask())


def block1xn_config(
    model: nn.Module,
    *,
    n: int,
    sparsity: Sparsity,
    prune_classifier: bool = False,
    prune_stem: bool = False,
    exclude: Iterable[str] = (),
    image_channels: Optional[int] = None,
) -> list[dict]:
    """Config entries ``{"tensor_fqn", "sparsity_level", "n"}`` selecting the
    layers the paper prunes: every Conv2d except the stem and depthwise convs,
    and the classifier (last Linear) only with ``prune_classifier``. See
    :func:`~sparsekernels.pruning.base.paper_skip_rule` and
    :func:`~sparsekernels.pruning.base.select_layers` (``sparsity`` as a
    float or a name-pattern mapping, ``exclude``, logging of skipped layers).
    Each entry's ``n`` overrides the sparsifier's default.
    """
    check_positive_int(n, "n")
    rule = paper_skip_rule(model, prune_classifier=prune_classifier, prune_stem=prune_stem,
                           image_channels=image_channels)
    config = select_layers(model, sparsity, rule, exclude=exclude, caller="block1xn_config")
    return [{**entry, "n": n} for entry in config]
