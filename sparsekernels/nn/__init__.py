"""Drop-in sparse conv modules, and the dense depthwise conv that runs beside them."""
from .base import SparseConv2d
from .block1xn import Block1xNConv2d
from .depthwise import DepthwiseConv2d, use_depthwise_kernel
from .pattern import PatternConv2d
from .replace import replace_module
from .stripe import StripeConv2d

__all__ = ["Block1xNConv2d", "DepthwiseConv2d", "PatternConv2d", "SparseConv2d", "StripeConv2d",
           "replace_module", "use_depthwise_kernel"]
