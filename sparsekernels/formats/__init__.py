"""Sparse weight formats: encode, decode and validate live together per kind."""
from .block1xn import Block1xN

__all__ = ["Block1xN"]
