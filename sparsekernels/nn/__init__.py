"""Drop-in sparse conv modules."""
from .block_conv import BlockSparseConv2d

__all__ = ["BlockSparseConv2d"]
