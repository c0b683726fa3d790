"""Optional dependencies: import one, or say which extra installs it.

The core (formats, ops, modules) needs only torch and numpy; everything else
is an extra of ``setup.py`` (``onnx``, ``data``, ``train``, ``bench``,
``triton``, ``test``), imported where it is used through :func:`require`.
"""
from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str) -> ModuleType:
    """``import module``, or an ImportError naming the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(f"{module!r} is not installed; it comes with the {extra!r} extra: "
                          f"pip install 'sparsekernels[{extra}]'") from exc
