"""CPU and CUDA backends of the stripe conv: the shared thin calls into
``sparsekernels._C`` (see :mod:`.native_calls`)."""
from __future__ import annotations

from .native_calls import native_backend

_calls = native_backend("stripe")
forward, forward_plan = _calls.forward, _calls.forward_plan
grad_input, grad_weight = _calls.grad_input, _calls.grad_weight
