"""Drop-in sparse conv modules."""
from .block_conv import BlockSparseConv2d
from .replace import replace_module

__all__ = ["BlockSparseConv2d", "replace_module"]
