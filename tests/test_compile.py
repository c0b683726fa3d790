"""The custom ops pass torch.library.opcheck, and torch.compile(fullgraph=True)
traces a model built from the sparse modules without graph breaks."""
import pytest
import torch
from torch import nn

import sparsekernels as sk
from sparsekernels.kinds import KINDS
from sparsekernels.testing import backends_here, make_case

BACKENDS = [b for b in backends_here("cpu") if b != "triton"]


def _conv(case, backend):
    return dict(stride=list(case.stride), padding=list(case.padding),
                dilation=list(case.dilation), groups=case.groups, backend=backend)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_opcheck_forward(kind, backend, channels_last):
    case = make_case(groups=2, cin=4, cout=6, stride=(2, 1), channels_last=channels_last,
                     kind=kind)
    topology, meta = case.weight.topology().as_op_args()
    x = case.x.clone().requires_grad_()
    values = case.weight.values.clone().requires_grad_()
    torch.library.opcheck(KINDS[kind].module.OPS.forward, (x, values, topology, meta, case.bias),
                          _conv(case, backend))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck_gradients(kind, backend):
    case = make_case(cin=4, cout=6, kind=kind)
    ops = KINDS[kind].module.OPS
    topology, meta = case.weight.topology().as_op_args()
    grad = torch.randn(2, 6, 7, 9, dtype=torch.float64)
    torch.library.opcheck(ops.grad_input, (grad, case.weight.values, topology, meta),
                          dict(input_hw=[7, 9], **_conv(case, backend)))
    torch.library.opcheck(ops.grad_weight, (case.x, grad, topology, meta),
                          _conv(case, backend))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding="same", bias=False)
        self.conv3 = nn.Conv2d(16, 8, 1, stride=2)

    def forward(self, x):
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


@pytest.mark.parametrize("kind", [spec.label for spec in KINDS.values()])
@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph_forward_and_backward(kind, backend):
    torch.manual_seed(0)
    net = sk.sparsify(_Net().double(), sparsity=0.5, kind=kind, backend=backend)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64)
    eager = net(x)
    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    out = compiled(x)
    torch.testing.assert_close(out, eager)
    out.sum().backward()
    assert net.conv2.values.grad is not None and net.conv2.values.grad.abs().sum() > 0


class _Inverted(nn.Module):
    """1x1 -> ReLU6 -> depthwise -> ReLU6 -> 1x1, as a MobileNet block."""

    def __init__(self):
        super().__init__()
        self.expand, self.act1 = nn.Conv2d(4, 16, 1), nn.ReLU6()
        self.depthwise, self.act2 = nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU6()
        self.project = nn.Conv2d(16, 8, 1)

    def forward(self, x):
        return self.project(self.act2(self.depthwise(self.act1(self.expand(x)))))


@pytest.mark.parametrize("kind", KINDS)
def test_compile_fullgraph_fused_activations_and_nchw_kernels(kind):
    torch.manual_seed(0)
    net = sk.sparsify(_Inverted().double().eval(), sparsity=0.5, kind=kind)
    sk.nn.use_nchw_kernels(net)
    fused = sk.fuse_epilogues(net)
    assert fused.expand.activation == "relu6" and fused.depthwise.activation == "relu6"
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64) * 4
    with torch.no_grad():
        eager = fused(x)  # the kernels' epilogues
        compiled = torch.compile(fused, fullgraph=True, backend="aot_eager")(x)  # the ops
    torch.testing.assert_close(compiled, eager)
