"""Which conv layers a sparsity applies to, shared by ``sparsify`` (the
library) and the pruning methods (the training layer), which sits above it."""
from __future__ import annotations

import fnmatch
from typing import Mapping, Optional, Union

from torch import nn

# One level for every layer, or {layer-name pattern (fnmatch): level}.
Sparsity = Union[float, Mapping[str, float]]


def level_for(name: str, sparsity: Sparsity) -> Optional[float]:
    """One level for every layer, or the first ``{name pattern: level}`` match."""
    if not isinstance(sparsity, Mapping):
        return sparsity
    for pattern, level in sparsity.items():
        if fnmatch.fnmatchcase(name, pattern):
            return level
    return None


def is_depthwise(conv: nn.Conv2d) -> bool:
    """Each group reads a single input channel, so no input channel is shared
    between output channels (any channel multiplier ``out/in``)."""
    return conv.groups > 1 and conv.in_channels == conv.groups
