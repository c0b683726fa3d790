"""Sparse weight formats: encode, decode and validate live together per kind."""
from .block1xn import Block1xN
from .stripe import Stripe

__all__ = ["Block1xN", "Stripe"]
