"""Drop-in sparse conv modules."""
from .block1xn import Block1xNConv2d
from .replace import replace_module

__all__ = ["Block1xNConv2d", "replace_module"]
