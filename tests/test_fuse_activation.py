"""fuse_activations: the ReLU / ReLU6 after a sparse conv moved into the
conv's epilogue, read off the model's graph; the fused model computes what
the original computes (float64), and activations the graph does not allow to
fuse stay calls."""
import copy
import io

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
        fused = sk.fuse_activations(model)
        return fused, fused(x), want


def _activation_calls(graph_module):
    return [n for n in graph_module.graph.nodes
            if (n.op == "call_module"
                and isinstance(graph_module.get_submodule(n.target), (nn.ReLU, nn.ReLU6)))
            or (n.op == "call_function" and n.target in (F.relu, torch.relu, F.relu6))]


@pytest.mark.parametrize("arch,shape,activation", [
    ("resnet20", (2, 3, 32, 32), "relu"),        # F.relu calls
    ("resnet18", (1, 3, 64, 64), "relu"),        # one nn.ReLU shared by every call of a block
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
    with torch.no_grad():  # the original model, whose convs changed with it, too
        torch.testing.assert_close(model(x), want, rtol=1e-10, atol=1e-10)
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
    assert (model.a.activation, model.b.activation) == ("relu", "relu6")
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
    with pytest.raises(TypeError, match="model: fuse_activations reads the model's graph"):
        sk.fuse_activations(_Untraceable())
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        sk.fuse_activations(lambda x: x)


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
