"""Eager inference calls run the forward op's body without the dispatcher
(ops/sparse_conv.py, _plain_inference); everything that must see the op
(autograd, a dispatch or function mode, a tracer) still gets the registered
custom op. Both routes give the same output."""
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from sparsekernels.kinds import KINDS

KIND_NAMES = list(KINDS)


class OpRaised(Exception):
    pass


def _module(kind):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1).double()
    module = KINDS[kind].module.from_dense(conv, sparsity=0.5)
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    return module, x, F.conv2d(x, module.to_dense().weight, module.bias, padding=1)


@pytest.fixture
def op_raises(monkeypatch):
    """Make every kind's registered forward op raise: the fast path must not
    need it; the paths that must use it fail loudly."""
    def patch(module):
        def boom(*args, **kwargs):
            raise OpRaised
        monkeypatch.setattr(type(module), "OPS", type(module).OPS._replace(forward=boom))
    return patch


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_inference_skips_the_dispatcher(kind, context, op_raises):
    module, x, want = _module(kind)
    op_raises(module)
    with context():
        out = module(x)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_parameters_needing_grad_take_the_op(kind, op_raises):
    module, x, _ = _module(kind)  # values and bias require grad
    op_raises(module)
    with pytest.raises(OpRaised):
        module(x)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_input_needing_grad_takes_the_op(kind, op_raises):
    module, x, _ = _module(kind)
    module.requires_grad_(False)
    op_raises(module)
    with pytest.raises(OpRaised):
        module(x.requires_grad_(True))


class _SeenOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_dispatch_mode_sees_the_op(kind):
    module, x, want = _module(kind)
    slug = KINDS[kind].slug
    with torch.no_grad(), _SeenOps() as mode:
        out = module(x)
    assert any(f"sparsekernels.{slug}_conv2d" in name for name in mode.names), mode.names
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


class _PassThrough(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_function_mode_takes_the_op(kind, op_raises):
    module, x, _ = _module(kind)
    op_raises(module)
    with torch.no_grad(), _PassThrough(), pytest.raises(OpRaised):
        module(x)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_the_profiler_sees_the_op(kind):
    module, x, want = _module(kind)
    slug = KINDS[kind].slug
    with torch.no_grad(), torch.profiler.profile() as prof:
        out = module(x)
    names = [e.name for e in prof.events()]
    assert any(f"sparsekernels::{slug}_conv2d" in name for name in names), names
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
