"""How the custom ops are registered: C++ kernels and autograd where the
extension is built (python_bindings/sparse_conv_ops.h), the Python op bodies
for the other backends and, without the extension, for everything. Each
route gives the dense float64 oracle's output and gradients."""
import itertools
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from sparsekernels import _ext
from sparsekernels.kinds import KINDS
from sparsekernels.testing import backends_here, make_case, reference_grads, reference_output

BACKENDS = [b for b in backends_here("cpu") if b != "triton"]
native = pytest.mark.skipif(_ext.C is None, reason="compiled kernels unavailable")


def _conv(case, backend):
    return dict(stride=list(case.stride), padding=list(case.padding),
                dilation=list(case.dilation), groups=case.groups, backend=backend)


@native
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_extension_registers_cpu_kernels_and_autograd_in_cpp(kind):
    for suffix in ("", "_grad_input", "_grad_weight"):
        dump = torch._C._dispatch_dump(f"sparsekernels::{kind}_conv2d{suffix}")
        cpu = next(line for line in dump.splitlines() if line.startswith("CPU:"))
        assert f"python_bindings/{kind}.cpp" in cpu, cpu
    forward = torch._C._dispatch_dump(f"sparsekernels::{kind}_conv2d")
    autograd = next(line for line in forward.splitlines() if line.startswith("Autograd"))
    assert f"python_bindings/{kind}.cpp" in autograd, autograd


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("wanted", [w for r in (1, 2, 3)
                                    for w in itertools.combinations(("x", "values", "bias"), r)])
def test_each_subset_of_operands_gets_its_gradients(kind, backend, wanted):
    """The C++ autograd counts gradients per tensor argument, a topology
    tensor each: a bias's gradient lands on the bias whatever else wants one."""
    case = make_case(cin=4, cout=6, stride=(2, 1), kind=kind, seed=3)
    topology, meta = case.weight.topology().as_op_args()
    leaves = {"x": case.x.clone(), "values": case.weight.values.clone(),
              "bias": case.bias.clone()}
    for name in wanted:
        leaves[name].requires_grad_()
    out = KINDS[kind].module.OPS.forward(leaves["x"], leaves["values"], topology, meta,
                                         leaves["bias"], **_conv(case, backend))
    torch.testing.assert_close(out, reference_output(case))
    grad_out = torch.rand_like(out) + 0.5
    got = torch.autograd.grad(out, [leaves[n] for n in wanted], grad_out)
    want = dict(zip(("x", "values", "bias"), reference_grads(case, grad_out)))
    for name, g in zip(wanted, got):
        torch.testing.assert_close(g, want[name], msg=lambda m: f"{name}: {m}")
    for name in set(leaves) - set(wanted):
        assert leaves[name].grad is None


@pytest.mark.parametrize("kind", KINDS)
def test_a_python_error_from_a_non_native_backend_keeps_its_type(kind):
    case = make_case(cin=4, cout=6, kind=kind)
    topology, meta = case.weight.topology().as_op_args()
    with pytest.raises(ValueError, match="backend: expected one of"):
        KINDS[kind].module.OPS.forward(case.x, case.weight.values, topology, meta, case.bias,
                                       **_conv(case, "no-such-backend"))


def test_without_the_extension_the_python_bodies_and_autograd_run_every_kind():
    """A broken build leaves the reference backend working: the ops are then
    Python's, with the same checks and gradients."""
    script = textwrap.dedent("""
        import sys, warnings
        sys.modules["sparsekernels._C"] = None  # as if the build were missing
        warnings.simplefilter("ignore")
        import torch
        from sparsekernels import _ext
        from sparsekernels.kinds import KINDS
        from sparsekernels.testing import make_case, reference_grads, reference_output
        assert _ext.C is None
        for kind in KINDS:
            case = make_case(cin=4, cout=6, kind=kind)
            topology, meta = case.weight.topology().as_op_args()
            x = case.x.clone().requires_grad_()
            values = case.weight.values.clone().requires_grad_()
            bias = case.bias.clone().requires_grad_()
            conv = dict(stride=list(case.stride), padding=list(case.padding),
                        dilation=list(case.dilation), groups=case.groups, backend="auto")
            out = KINDS[kind].module.OPS.forward(x, values, topology, meta, bias, **conv)
            torch.testing.assert_close(out, reference_output(case))
            grad_out = torch.rand_like(out)
            got = torch.autograd.grad(out, [x, values, bias], grad_out)
            for g, w in zip(got, reference_grads(case, grad_out)):
                torch.testing.assert_close(g, w)
            # The fused epilogue: relu(conv + residual), the residual's
            # gradient the one the ReLU lets through.
            residual = torch.randn_like(out).requires_grad_()
            out = KINDS[kind].module.OPS.forward(x, values, topology, meta, bias, residual,
                                                 **conv, out_min=0.0)
            want = torch.relu(reference_output(case) + residual)
            torch.testing.assert_close(out, want)
            got = torch.autograd.grad(out, [x, residual], grad_out)
            torch.testing.assert_close(got[1], grad_out * (want > 0))
            torch.testing.assert_close(got[0], reference_grads(case, got[1])[0])
            try:
                KINDS[kind].module.OPS.forward(x, values, topology, meta, bias,
                                               **{**conv, "groups": 2})
            except ValueError as e:
                assert "does not match the weight's groups=1" in str(e), e
            else:
                raise AssertionError("groups=2 was accepted")
            out = KINDS[kind].module.OPS.forward(x, values, topology, meta, bias, **conv)
            try:
                gx, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
                torch.autograd.grad(gx.sum(), values)
            except NotImplementedError as e:
                assert "double backward" in str(e), e
            else:
                raise AssertionError("a gradient of a gradient was differentiated")
        print("ok")
    """)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=root, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().endswith("ok")


@pytest.mark.parametrize("kind", KINDS)
def test_forward_mode_ad_is_refused_not_dropped(kind):
    """The autograd kernel skips its node only when nothing asks for a
    derivative: a forward-mode tangent still reaches the (unimplemented)
    JVP, so it fails loudly instead of leaving the output without one."""
    import torch.autograd.forward_ad as fwAD
    case = make_case(cin=4, cout=6, kind=kind)
    topology, meta = case.weight.topology().as_op_args()
    with torch.no_grad(), fwAD.dual_level():
        x = fwAD.make_dual(case.x, torch.ones_like(case.x))
        with pytest.raises(RuntimeError, match="jvp|forward AD|forward-mode"):
            KINDS[kind].module.OPS.forward(x, case.weight.values, topology, meta, case.bias,
                                           **_conv(case, "auto"))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_gradient_of_a_gradient_is_refused_not_zero(kind, backend):
    """The gradient ops have no derivative: create_graph=True through them
    fails loudly, where PyTorch's fallback would give zeros and a warning."""
    case = make_case(cin=4, cout=6, kind=kind)
    topology, meta = case.weight.topology().as_op_args()
    x = case.x.clone().requires_grad_()
    values = case.weight.values.clone().requires_grad_()
    out = KINDS[kind].module.OPS.forward(x, values, topology, meta, case.bias,
                                         **_conv(case, backend))
    with pytest.raises(NotImplementedError, match="double backward"):
        gx, = torch.autograd.grad(out.square().sum(), x, create_graph=True)
        torch.autograd.grad(gx.sum(), values)
