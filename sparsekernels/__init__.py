"""sparsekernels: structured-sparse conv2d kernels for pruned CNNs.

    import sparsekernels as sk
    fmt = sk.Block1xN.from_dense(conv.weight, n=16, sparsity=0.75)
    y = sk.block1xn_conv2d(x, fmt, conv.bias, stride=1, padding=1)
    model = sk.sparsify(model, n=16, sparsity=0.75)      # swap eligible convs
    sk.fold_batchnorm(model.eval())                      # inference: BN into the convs
    model = sk.fuse_epilogues(model)                   # ReLUs into the sparse convs
    sk.keep_freed_memory()                             # CPU inference: reuse freed pages
"""
from . import nn
from .cpu_allocator import keep_freed_memory
from .fold_bn import fold_batchnorm
from .formats import Block1xN, Pattern, Stripe
from .fuse_epilogue import fuse_epilogues
from .ops.backends import BACKENDS
from .ops.block1xn import block1xn_conv2d
from .ops.pattern import pattern_conv2d
from .ops.stripe import stripe_conv2d
from .sparsify import sparsify

__all__ = ["BACKENDS", "Block1xN", "Pattern", "Stripe", "block1xn_conv2d", "fold_batchnorm",
           "fuse_epilogues", "keep_freed_memory", "nn", "pattern_conv2d", "sparsify",
           "stripe_conv2d"]
__version__ = "0.1.0"
