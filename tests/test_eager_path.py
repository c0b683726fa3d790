"""Eager inference calls run the forward op's body without the dispatcher
(ops/sparse_conv.py, _plain_inference); everything that must see the op
(autograd, a dispatch or function mode, a tracer) still gets the registered
custom op. Both routes give the same output. A module keeps its eager call's
resolved arguments (InferencePlan) while its weight is unchanged."""
import copy
import io

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


def _plan(module):
    return module.__dict__.get("_plan")


def _dense_out(module, x):
    return F.conv2d(x, module.to_dense().weight, module.bias, module.stride, module.padding)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_the_plan_is_kept_while_the_weight_is_unchanged(kind):
    module, x, want = _module(kind)
    with torch.no_grad():
        module(x)
        plan = _plan(module)
        out = module(x)
    assert plan is not None and _plan(module) is plan
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def _change(module, change, kind):
    if change == "values_in_place":
        module.values.mul_(2)
    elif change == "bias_in_place":
        module.bias.add_(1)
    elif change == "new_values":
        module.values = torch.nn.Parameter(module.values * 3)
    elif change == "stride":
        module.stride = 2
    elif change == "load_state_dict":  # another topology, adopted whole
        module.load_state_dict(_other_topology(kind).state_dict())


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("change", ["values_in_place", "bias_in_place", "new_values", "stride",
                                    "load_state_dict"])
def test_a_changed_weight_gets_a_new_plan(kind, change):
    module, x, _ = _module(kind)
    with torch.no_grad():
        module(x)
        plan = _plan(module)
        _change(module, change, kind)
        out = module(x)
    assert _plan(module) is not plan
    torch.testing.assert_close(out, _dense_out(module, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_an_index_edited_behind_the_plan_never_reaches_a_kernel(kind):
    """``.data`` writes bypass the version counter the plan watches: the
    backend's own checks still refuse the out-of-range index, every call."""
    module, x, _ = _module(kind)
    name = type(module).FORMAT.INDEX_TENSORS[-1]
    with torch.no_grad():
        module(x)
        getattr(module, name).data[0] = 10 ** 6
        with pytest.raises((ValueError, IndexError, RuntimeError), match=name):
            module(x)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_bad_input_through_the_plan_is_named(kind):
    module, x, _ = _module(kind)
    with torch.no_grad():
        module(x)
        with pytest.raises(TypeError, match="input: dtype"):
            module(x.float())
        with pytest.raises(ValueError, match="input: expected 8 channels"):
            module(x[:, :5])


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_copies_rebuild_their_own_plan(kind):
    module, x, want = _module(kind)
    with torch.no_grad():
        module(x)
        clone = copy.deepcopy(module)
        buf = io.BytesIO()
        torch.save(module, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        assert _plan(clone) is None and _plan(loaded) is None
        for copied in (clone, loaded):
            torch.testing.assert_close(copied(x), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_module_without_bias_keeps_a_plan(kind):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(8, 16, 3, padding=1, bias=False).double()
    module = KINDS[kind].module.from_dense(conv, sparsity=0.5)
    x = torch.randn(2, 8, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        module(x)
        plan = _plan(module)
        out = module(x)
    assert plan is not None and _plan(module) is plan
    torch.testing.assert_close(out, _dense_out(module, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_conv_argument_changed_in_place_gets_a_new_plan(kind):
    module, x, _ = _module(kind)
    module.stride = [1, 1]
    with torch.no_grad():
        module(x)
        module.stride[0] = 2
        out = module(x)
    torch.testing.assert_close(out, _dense_out(module, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_moving_a_module_drops_its_plan(kind):
    module, x, _ = _module(kind)
    with torch.no_grad():
        module(x)
        module.float()
        assert _plan(module) is None
        out = module(x.float())
    torch.testing.assert_close(out, _dense_out(module, x.float()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_plain_calls_take_the_bound_forward(kind):
    """A plain call runs the plan's bound C++ forward whole, the input's layout
    kept; a call it refuses (a residual that broadcasts) takes the general
    path and still gets PyTorch's semantics."""
    module, x, want = _module(kind)
    with torch.no_grad():
        module(x)
        plan = _plan(module)
        assert plan.bound is not None
        native = plan.native

        def general(*args, **kwargs):
            raise AssertionError("a plain call took the general path")

        plan.native = general
        x_cl = x.contiguous(memory_format=torch.channels_last)
        out, out_cl = module(x), module(x_cl)
        assert out_cl.is_contiguous(memory_format=torch.channels_last)
        plan.native = native
        r = torch.randn(16, 1, 1, dtype=torch.float64)
        out_r = module(x, residual=r)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_cl, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out_r, want + r, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_plain_call_is_one_cpp_call(kind, monkeypatch):
    """Once planned, a plain call takes the plan's C++ ``fast`` call, which
    checks the weight and the call itself: no Python plan lookup."""
    module, x, want = _module(kind)
    with torch.no_grad():
        module(x)
        assert _plan(module).fast is not None

        def rebuilt(*args, **kwargs):
            raise AssertionError("a plain call looked its plan up in Python")

        monkeypatch.setattr(module, "_inference_plan", rebuilt)
        out = module(x)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


def _other_topology(kind):
    torch.manual_seed(1)
    return KINDS[kind].module.from_dense(torch.nn.Conv2d(8, 16, 3, padding=1).double(),
                                         sparsity=0.75)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_functional_call_with_another_topology_runs_it(kind):
    """``torch.func.functional_call`` swaps tensors in the module's dicts,
    behind ``__setattr__``: the fast call sees other buffers and values and
    leaves the call to the general path."""
    module, x, _ = _module(kind)
    other = _other_topology(kind)
    with torch.no_grad():
        module(x)
        out = torch.func.functional_call(module, dict(other.named_parameters(),
                                                      **dict(other.named_buffers())), (x,))
        again = module(x)
    torch.testing.assert_close(out, _dense_out(other, x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(again, _dense_out(module, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_buffer_swapped_behind_setattr_is_seen(kind):
    """Only the topology buffers change (same values): a plan bound to the old
    ones must not run; the new topology's kernels refuse or run it, never the
    old topology silently."""
    module, x, _ = _module(kind)
    name = type(module).FORMAT.INDEX_TENSORS[-1]
    with torch.no_grad():
        module(x)
        plan = _plan(module)
        module._buffers[name] = getattr(module, name).clone()
        out = module(x)
    assert _plan(module) is not plan
    torch.testing.assert_close(out, _dense_out(module, x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("arg,value", [("activation", "relu"), ("padding", 0),
                                       ("dilation", 2), ("padding_mode", "reflect")])
def test_rebinding_a_conv_argument_drops_the_plan(kind, arg, value):
    module, x, _ = _module(kind)
    with torch.no_grad():
        module(x)
        setattr(module, arg, value)
        assert _plan(module) is None
        out = module(x)
    ref = module.to_dense()
    want = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect") if arg == "padding_mode" else x,
                    ref.weight, ref.bias, ref.stride,
                    0 if arg == "padding_mode" else ref.padding, ref.dilation)
    torch.testing.assert_close(out, want.relu() if arg == "activation" else want,
                               rtol=1e-12, atol=1e-12)


class _Marked(torch.Tensor):
    pass


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_a_tensor_subclass_input_takes_the_op(kind, op_raises):
    module, x, _ = _module(kind)
    with torch.no_grad():
        module(x)
        op_raises(module)
        with pytest.raises(OpRaised):
            module(x.as_subclass(_Marked))


def _traced(module, x):
    return torch.jit.trace(module, x, check_trace=False)(x)


_WATCHERS = {
    "grad": lambda module, x: module.requires_grad_(True)(x),
    "dispatch_mode": lambda module, x: _in_mode(_SeenOps(), module, x),
    "function_mode": lambda module, x: _in_mode(_PassThrough(), module, x),
    "profiler": lambda module, x: _in_mode(torch.profiler.profile(), module, x),
    "tracer": _traced,
}


def _in_mode(mode, module, x):
    with mode:
        return module(x)


@pytest.mark.parametrize("kind", KIND_NAMES)
@pytest.mark.parametrize("watcher", _WATCHERS)
def test_a_planned_module_still_gives_the_op_to_whoever_watches(kind, watcher, op_raises):
    """The plan's C++ call makes _plain_inference's decision itself: with a
    plan in place, a gradient to record, a dispatch or function mode, the
    profiler and a tracer each still get the registered op."""
    module, x, _ = _module(kind)
    module.requires_grad_(False)
    with torch.no_grad():
        module(x)
    assert _plan(module).fast is not None
    op_raises(module)
    with torch.set_grad_enabled(watcher == "grad"), pytest.raises(OpRaised):
        _WATCHERS[watcher](module, x)
