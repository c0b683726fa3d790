"""Sparse weight formats: encode, decode and validate live together per kind."""
from .block1xn import Block1xN
from .pattern import Pattern
from .stripe import Stripe

__all__ = ["Block1xN", "Pattern", "Stripe"]
