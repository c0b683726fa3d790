"""fuse_epilogues: the residual add and ReLU / ReLU6 after a sparse conv
moved into the conv's epilogue, read off the model's graph; the fused model
computes what the original computes (float64) on every path, the original
is left as it was, and what the graph does not allow to fuse stays a call."""
import copy
import io
import operator

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

import sparsekernels as sk
from sparsekernels.kinds import KINDS
from sparsekernels.models import get_model


def _sparse_convs(model):
    return [m for m in model.modules() if isinstance(m, sk.nn.SparseConv2d)]


def _fused(model, x):
    """(fused model, its output, the original's output before fusing)."""
    with torch.no_grad():
        want = model(x)
        fused = sk.fuse_epilogues(model)
        return fused, fused(x), want


def _activation_calls(graph_module):
    return [n for n in graph_module.graph.nodes
            if (n.op == "call_module"
                and isinstance(graph_module.get_submodule(n.target), (nn.ReLU, nn.ReLU6)))
            or (n.op == "call_function" and n.target in (F.relu, torch.relu, F.relu6))]


@pytest.mark.parametrize("arch,shape,activation", [
    ("resnet20", (2, 3, 32, 32), "relu"),        # F.relu calls
    ("resnet18", (1, 3, 64, 64), "relu"),        # one nn.ReLU shared by every call of a block
    ("resnet50", (1, 3, 64, 64), "relu"),        # bottlenecks: relu(conv3(..) + downsample(x))
    ("mobilenet_v2", (1, 3, 64, 64), "relu6"),   # an nn.ReLU6 module per conv
])
@pytest.mark.parametrize("kind", KINDS)
def test_networks_keep_their_outputs(arch, shape, activation, kind):
    torch.manual_seed(0)
    model = sk.sparsify(get_model(arch).double().eval(), sparsity=0.5, kind=kind)
    sk.fold_batchnorm(model)
    x = torch.randn(*shape, dtype=torch.float64)
    fused, got, want = _fused(model, x)
    assert isinstance(fused, fx.GraphModule)
    assert any(m.activation == activation for m in _sparse_convs(fused))
    # no activation is left on a sparse conv's output
    for node in _activation_calls(fused):
        src = node.args[0]
        assert not (src.op == "call_module"
                    and isinstance(fused.get_submodule(src.target), sk.nn.SparseConv2d))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    with torch.no_grad():  # the original is left as it was
        torch.testing.assert_close(model(x), want, rtol=1e-10, atol=1e-10)
    assert all(m.activation is None for m in _sparse_convs(model))
    # the autograd path applies the same activations after the op
    torch.testing.assert_close(fused(x.requires_grad_()), want, rtol=1e-10, atol=1e-10)


def _conv(kind="block1xn", cin=8, cout=8):
    return KINDS[kind].module.from_dense(nn.Conv2d(cin, cout, 3, padding=1).double(),
                                         sparsity=0.5)


class _Chain(nn.Module):
    """conv -> Identity (a folded BN) -> relu, then conv -> relu6 (function)."""

    def __init__(self):
        super().__init__()
        self.a, self.bn, self.act, self.b = _conv(), nn.Identity(), nn.ReLU(inplace=True), _conv()

    def forward(self, x):
        return F.relu6(self.b(self.act(self.bn(self.a(x)))), inplace=False)


def test_identities_are_skipped_and_functions_fuse():
    torch.manual_seed(1)
    model = _Chain().eval()
    fused, got, want = _fused(model, torch.randn(2, 8, 9, 7, dtype=torch.float64) * 4)
    assert (fused.a.activation, fused.b.activation) == ("relu", "relu6")
    assert _activation_calls(fused) == []
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class _TwoUses(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.act = _conv(), nn.ReLU()

    def forward(self, x):
        y = self.conv(x)
        return self.act(y) + y  # the conv's output is read twice


class _CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        return F.relu(self.conv(x)) + self.conv(x)


class _DenseConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3).double()

    def forward(self, x):
        return torch.relu(self.conv(x))


class _Leaky(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        return F.leaky_relu(self.conv(x)) + F.relu(self.conv.weight_shape[0] * x)


@pytest.mark.parametrize("model_cls", [_TwoUses, _CalledTwice, _DenseConv, _Leaky])
def test_activations_the_graph_does_not_allow_stay_calls(model_cls):
    torch.manual_seed(2)
    model = model_cls().eval()
    fused, got, want = _fused(model, torch.randn(2, 8, 9, 7, dtype=torch.float64))
    assert all(m.activation is None for m in _sparse_convs(fused))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        return self.conv(x) if x.sum() > 0 else x  # data-dependent control flow


def test_an_untraceable_model_is_refused_by_name():
    with pytest.raises(TypeError, match="model: fuse_epilogues reads the model's graph"):
        sk.fuse_epilogues(_Untraceable())
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        sk.fuse_epilogues(lambda x: x)


@pytest.mark.parametrize("kind", KINDS)
def test_copies_keep_the_activation(kind):
    torch.manual_seed(3)
    model = nn.Sequential(_conv(kind), nn.ReLU()).eval()
    x = torch.randn(1, 8, 6, 6, dtype=torch.float64)
    fused, _, want = _fused(model, x)
    buf = io.BytesIO()
    torch.save(fused, buf)
    buf.seek(0)
    for copy_ in (copy.deepcopy(fused), torch.load(buf, weights_only=False)):
        assert _sparse_convs(copy_)[0].activation == "relu"
        with torch.no_grad():
            torch.testing.assert_close(copy_(x), want, rtol=1e-10, atol=1e-10)
    assert "activation='relu'" in repr(_sparse_convs(fused)[0])


def _adds(graph_module):
    return [n for n in graph_module.graph.nodes if n.op == "call_function"
            and n.target in (operator.add, operator.iadd, torch.add)]


@pytest.mark.parametrize("kind", KINDS)
def test_residual_adds_fuse_with_their_activation(kind):
    """relu(conv(x) + r): the conv called with residual=r, relu fused; the
    add and relu gone from the graph, on every path the same output."""
    torch.manual_seed(4)
    model = sk.sparsify(get_model("resnet50").double().eval(), sparsity=0.5, kind=kind)
    sk.fold_batchnorm(model)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    fused, got, want = _fused(model, x)
    assert _adds(fused) == []
    residual_calls = [n for n in fused.graph.nodes if n.op == "call_module" and "residual" in n.kwargs]
    assert len(residual_calls) == 16  # one per bottleneck
    assert all(fused.get_submodule(n.target).activation == "relu" for n in residual_calls)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(fused(x.requires_grad_()), want, rtol=1e-10, atol=1e-10)


class _Residuals(nn.Module):
    """The add forms, either order, with and without an activation after."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c, self.d = _conv(), _conv(), _conv(), _conv()

    def forward(self, x):
        y = x + self.a(x)                  # residual first, no activation (MobileNet-V2)
        z = torch.add(self.b(y), y)        # torch.add
        w = self.c(z)
        w += z                             # +=
        v = F.relu(w)                      # the sum's only reader: fused
        return v + torch.relu(self.d(v) + 1.5)  # a scalar residual stays an add


def test_add_forms():
    torch.manual_seed(5)
    model = _Residuals().eval()
    fused, got, want = _fused(model, torch.randn(2, 8, 9, 7, dtype=torch.float64))
    calls = {n.target: n.kwargs for n in fused.graph.nodes if n.op == "call_module"}
    assert all("residual" in calls[k] for k in "abc") and "residual" not in calls["d"]
    assert (fused.a.activation, fused.b.activation, fused.c.activation) == (None, None, "relu")
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


class _ConvReadTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        y = self.conv(x)
        return F.relu(y + x) * y  # the conv's output is read by the add and the product


class _SumReadTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        s = self.conv(x) + x
        return F.relu(s) + s  # the sum is read twice: the add fuses, the relu stays


def test_residual_fusion_respects_other_readers():
    torch.manual_seed(6)
    x = torch.randn(2, 8, 9, 7, dtype=torch.float64)
    fused, got, want = _fused(_ConvReadTwice().eval(), x)
    assert len(_adds(fused)) == 1 and fused.conv.activation is None
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    fused, got, want = _fused(_SumReadTwice().eval(), x)
    assert len(_adds(fused)) == 1 and fused.conv.activation is None
    assert any("residual" in n.kwargs for n in fused.graph.nodes)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_a_residual_that_broadcasts_takes_pytorchs_add(kind):
    """conv(x) + r with r of shape [C, 1, 1]: the same as the unfused add."""
    torch.manual_seed(7)
    conv = _conv(kind)
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    r = torch.randn(8, 1, 1, dtype=torch.float64)
    with torch.no_grad():
        conv.activation = "relu"
        got = conv(x, residual=r)
        conv.activation = None
        want = F.relu(conv(x) + r)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
