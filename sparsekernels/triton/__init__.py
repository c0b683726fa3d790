"""Triton backend of the 1xN block-sparse conv2d (see block1xn)."""
