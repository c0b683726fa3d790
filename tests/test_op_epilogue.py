"""The forward ops' fused epilogue: ``residual`` added, then the output
clamped to ``[out_min, out_max]`` (a ReLU / ReLU6), on every backend and
route, against the dense float64 oracle; its gradients; its checks; and the
compiled graph of a fused network, whose activations and residual adds are
the ops' arguments rather than ops of their own."""
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsekernels as sk
from sparsekernels.kinds import KINDS
from sparsekernels.testing import backends_here, make_case

BACKENDS = backends_here("cpu")
# (out_min, out_max): ReLU, ReLU6, an upper bound alone, a lower bound below zero.
BOUNDS = [(0.0, None), (0.0, 6.0), (None, 0.25), (-0.5, None)]


def _conv(case, backend):
    return dict(stride=list(case.stride), padding=list(case.padding),
                dilation=list(case.dilation), groups=case.groups, backend=backend)


def _case(kind, **kw):
    # Outputs spread over [-4, 4]: both sides of every bound are hit.
    case = make_case(cin=4, cout=6, stride=(2, 1), groups=2, kind=kind, **kw)
    return case._replace(x=case.x * 4)


def _residual(case, layout="nchw", seed=1):
    out_hw = (case.x.shape[2] + 1) // 2, case.x.shape[3]  # stride (2, 1), padding 1
    gen = torch.Generator().manual_seed(seed)
    r = torch.rand(case.x.shape[0], 6, *out_hw, generator=gen, dtype=torch.float64) * 4 - 2
    if layout == "channels_last":
        return r.contiguous(memory_format=torch.channels_last)
    if layout == "noncontiguous":  # every other column of a wider tensor
        wide = torch.zeros(*r.shape[:3], 2 * r.shape[3], dtype=r.dtype)
        wide[..., ::2] = r
        return wide[..., ::2]
    return r


def _oracle(case, values, bias, residual, bounds, x=None):
    """clamp(F.conv2d(x, dense weight, bias) + residual) in float64 autograd."""
    x = case.x if x is None else x
    w = case.weight.with_values(values).to_dense()
    out = F.conv2d(x, w, bias, case.stride, case.padding, case.dilation, case.groups)
    if residual is not None:
        out = out + residual
    lo, hi = bounds
    return out if (lo, hi) == (None, None) else out.clamp(lo, hi)


def _op(kind, case, x, values, bias, residual, bounds, backend):
    topology, meta = case.weight.topology().as_op_args()
    return KINDS[kind].module.OPS.forward(x, values, topology, meta, bias, residual,
                                          **_conv(case, backend), out_min=bounds[0],
                                          out_max=bounds[1])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bounds", BOUNDS)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "noncontiguous"])
def test_epilogue_matches_the_oracle(kind, backend, bounds, layout):
    case = _case(kind, channels_last=layout == "channels_last")
    residual = _residual(case, layout)
    out = _op(kind, case, case.x, case.weight.values, case.bias, residual, bounds, backend)
    torch.testing.assert_close(out, _oracle(case, case.weight.values, case.bias, residual,
                                            bounds))
    assert out.is_contiguous(memory_format=torch.channels_last
                             if layout == "channels_last" else torch.contiguous_format)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_clamp_alone_keeps_nan(kind, backend):
    """As torch.clamp: a NaN output stays NaN. (Which outputs a NaN input
    reaches is the kernels' own rule, test_sparse_conv.py: pruned weights
    do not exist.)"""
    case = _case(kind)
    x = case.x.clone()
    x[0, :, 2, 3] = float("nan")
    plain = _op(kind, case, x, case.weight.values, case.bias, None, (None, None), backend)
    out = _op(kind, case, x, case.weight.values, case.bias, None, (0.0, 6.0), backend)
    assert plain.isnan().any()
    torch.testing.assert_close(out, plain.clamp(0.0, 6.0), equal_nan=True)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("wanted", [w for r in (1, 2, 4)
                                    for w in itertools.combinations(
                                        ("x", "values", "bias", "residual"), r)])
def test_each_operand_gets_its_gradient_through_the_clamp(kind, backend, wanted):
    """The residual's gradient is the clamped gradient, whichever other
    operands want one (the C++ autograd counts tensor arguments)."""
    case = _case(kind, seed=3)
    leaves = {"x": case.x.clone(), "values": case.weight.values.clone(),
              "bias": case.bias.clone(), "residual": _residual(case)}
    for name in wanted:
        leaves[name].requires_grad_()
    out = _op(kind, case, leaves["x"], leaves["values"], leaves["bias"], leaves["residual"],
              (0.0, 6.0), backend)
    want_out = _oracle(case, leaves["values"], leaves["bias"], leaves["residual"], (0.0, 6.0),
                       x=leaves["x"])
    torch.testing.assert_close(out, want_out)
    grad_out = torch.rand_like(out) + 0.5
    got = torch.autograd.grad(out, [leaves[n] for n in wanted], grad_out)
    want = torch.autograd.grad(want_out, [leaves[n] for n in wanted], grad_out)
    for name, g, w in zip(wanted, got, want):
        torch.testing.assert_close(g, w, msg=lambda m: f"{name}: {m}")
    for name in set(leaves) - set(wanted):
        assert leaves[name].grad is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
@pytest.mark.parametrize("bounds", [(0.0, None), (0.0, 6.0)])
def test_gradcheck_with_the_epilogue(kind, backend, bounds):
    case = _case(kind)

    def fn(x, values, bias, residual):
        return _op(kind, case, x, values, bias, residual, bounds, backend)

    inputs = (case.x.clone().requires_grad_(), case.weight.values.clone().requires_grad_(),
              case.bias.clone().requires_grad_(), _residual(case).requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "triton"])
def test_opcheck_with_the_epilogue(kind, backend):
    case = _case(kind, channels_last=True)
    topology, meta = case.weight.topology().as_op_args()
    args = (case.x.clone().requires_grad_(), case.weight.values.clone().requires_grad_(),
            topology, meta, case.bias, _residual(case).requires_grad_())
    torch.library.opcheck(KINDS[kind].module.OPS.forward, args,
                          dict(**_conv(case, backend), out_min=0.0, out_max=6.0))


@pytest.mark.parametrize("kind", KINDS)
def test_bad_epilogues_get_one_message_on_every_route(kind):
    """The C++ op kernel (native backend) and the Python op body (the
    reference) refuse the same epilogues with the same words."""
    case = _case(kind)
    good = _residual(case)
    bad = [
        (good.float(), None, TypeError, "residual: expected dtype torch.float64, got "
                                        "torch.float32"),
        (good[:, :5], None, ValueError, r"residual: expected the output's shape \[2, 6, 4, 9\]"
                                        r", got \[2, 5, 4, 9\]"),
        (None, (1.0, 0.0), ValueError, "out_min, out_max: expected out_min <= out_max, "
                                       "neither NaN, got 1, 0"),
        (None, (float("nan"), None), ValueError, "out_min, out_max: expected out_min <= "
                                                 "out_max, neither NaN, got nan, inf"),
    ]
    # A meta tensor among real ones sends the call to the fake kernel, which
    # refuses it too rather than return a meta tensor.
    bad.append((good.to("meta"), None, ValueError, "residual: expected a tensor on cpu, "
                                                   "got meta"))
    for residual, bounds, error, message in bad:
        for backend in [b for b in BACKENDS if b != "triton"]:
            with pytest.raises(error, match=message):
                _op(kind, case, case.x, case.weight.values, case.bias, residual,
                    bounds or (0.0, None), backend)


class _Block(nn.Module):
    """relu(conv2(relu(conv1(x))) + x): a basic residual block."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv2(torch.relu(self.conv1(x))) + x)


@pytest.mark.parametrize("kind", [spec.label for spec in KINDS.values()])
def test_a_compiled_fused_network_calls_only_the_ops(kind):
    """After fuse_epilogues the traced graph holds the two sparse ops, the
    second with the block's input as its residual, both clamped at zero:
    no ReLU or add of its own (eager inference fuses them the same way)."""
    torch.manual_seed(0)
    net = sk.fuse_epilogues(sk.sparsify(_Block().double().eval(), sparsity=0.5, kind=kind))
    graphs = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    x = torch.randn(2, 8, 6, 7, dtype=torch.float64)
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net, fullgraph=True, backend=record)(x)
    torch.testing.assert_close(compiled, eager)
    calls = [n for n in graphs[0].graph.nodes if n.op == "call_function"]
    ops = [n for n in calls if "sparsekernels" in str(n.target)]
    assert len(ops) == 2, calls
    assert all(n.kwargs.get("out_min") == 0.0 for n in ops), [n.kwargs for n in ops]
    assert "residual" in ops[1].kwargs or len(ops[1].args) > 5
    assert not [n for n in calls if n not in ops and any(
        k in str(n.target) for k in ("relu", "add", "clamp", "hardtanh"))], calls


@pytest.mark.parametrize("kind", [spec.label for spec in KINDS.values()])
def test_training_through_a_fused_block_matches_the_dense_block(kind):
    """A fused residual block trained (autograd through the ops' epilogue)
    gets the dense float64 block's gradients."""
    torch.manual_seed(0)
    net = sk.fuse_epilogues(sk.sparsify(_Block().double(), sparsity=0.5, kind=kind))
    assert net.conv2.activation == "relu"
    ref = _Block().double()
    for name in ("conv1", "conv2"):
        getattr(ref, name).load_state_dict(getattr(net, name).to_dense().state_dict())
    x = torch.randn(2, 8, 6, 7, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.rand(2, 8, 6, 7, dtype=torch.float64)
    out, want = net(x), ref(x_ref)
    torch.testing.assert_close(out, want)
    out.backward(grad)
    want.backward(grad)
    torch.testing.assert_close(x.grad, x_ref.grad)
    for name in ("conv1", "conv2"):
        conv, dense = getattr(net, name), getattr(ref, name)
        torch.testing.assert_close(conv.values.grad, conv.format().gather(dense.weight.grad))
        torch.testing.assert_close(conv.bias.grad, dense.bias.grad)


@pytest.mark.parametrize("kind", KINDS)
def test_a_meta_operand_among_real_ones_is_refused_by_every_op(kind):
    """The fake kernels check devices: otherwise a call mixing a meta tensor
    with CPU ones returns a meta tensor (the dispatcher picks them)."""
    case = _case(kind)
    ops = KINDS[kind].module.OPS
    topology, meta = case.weight.topology().as_op_args()
    conv = _conv(case, "auto")
    grad = torch.rand(2, 6, 4, 9, dtype=torch.float64)
    with pytest.raises(ValueError, match="values: expected a tensor on cpu, got meta"):
        ops.forward(case.x, case.weight.values.to("meta"), topology, meta, case.bias, **conv)
    with pytest.raises(ValueError, match="bias: expected a tensor on cpu, got meta"):
        ops.forward(case.x, case.weight.values, topology, meta, case.bias.to("meta"), **conv)
    with pytest.raises(ValueError, match=r"\w+: expected a tensor on cpu, got meta"):
        ops.forward(case.x, case.weight.values, [t.to("meta") for t in topology], meta,
                    case.bias, **conv)
    with pytest.raises(ValueError, match="values: expected a tensor on cpu, got meta"):
        ops.grad_input(grad, case.weight.values.to("meta"), topology, meta, input_hw=[7, 9],
                       **conv)
    with pytest.raises(ValueError, match="grad_out: expected a tensor on cpu, got meta"):
        ops.grad_weight(case.x, grad.to("meta"), topology, meta, **conv)
