"""Drop-in sparse conv modules."""
from .base import SparseConv2d
from .block1xn import Block1xNConv2d
from .pattern import PatternConv2d
from .replace import replace_module
from .stripe import StripeConv2d

__all__ = ["Block1xNConv2d", "PatternConv2d", "SparseConv2d", "StripeConv2d", "replace_module"]
