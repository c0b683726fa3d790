"""Swap one named submodule of a model for another."""
from torch import nn


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Set ``model``'s submodule ``name`` (dotted, e.g. ``layer1.0.conv2``) to ``new``."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)
