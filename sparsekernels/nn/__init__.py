"""Drop-in sparse conv modules, and the dense ops that run beside them in NCHW."""
from .base import SparseConv2d
from .block1xn import Block1xNConv2d
from .nchw_kernels import DepthwiseConv2d, InputConv2d, MaxPool2d, use_nchw_kernels
from .pattern import PatternConv2d
from .replace import replace_module
from .stripe import StripeConv2d

__all__ = ["Block1xNConv2d", "DepthwiseConv2d", "InputConv2d", "MaxPool2d", "PatternConv2d",
           "SparseConv2d", "StripeConv2d", "replace_module", "use_nchw_kernels"]
