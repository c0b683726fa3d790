"""Drop-in sparse conv modules."""
from .base import SparseConv2d
from .block1xn import Block1xNConv2d
from .replace import replace_module

__all__ = ["Block1xNConv2d", "SparseConv2d", "replace_module"]
