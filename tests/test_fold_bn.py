"""fold_batchnorm: eval-mode BN folded into the conv before it, sparse or
dense, with the model's float64 outputs and the sparsity structure kept; BNs
the graph does not allow to fold are left alone."""
import pytest
import torch
from torch import nn

import sparsekernels as sk
from sparsekernels.kinds import KINDS
from sparsekernels.models import get_model


def _bn(channels, seed):
    gen = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(channels)
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(channels, generator=gen))
        bn.running_var.copy_(torch.rand(channels, generator=gen) + 0.1)
        bn.weight.copy_(torch.randn(channels, generator=gen))
        bn.bias.copy_(torch.randn(channels, generator=gen))
    return bn


def _net(bias=False):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=bias), _bn(16, 1), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, stride=2, bias=bias), _bn(16, 2)).double().eval()


def _x():
    return torch.randn(2, 8, 11, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("kind", [None, *KINDS])
@pytest.mark.parametrize("bias", [False, True])
def test_folds_into_sparse_and_dense_convs(kind, bias):
    model = _net(bias)
    if kind is not None:
        model = sk.sparsify(model, sparsity=0.5, kind=kind)
    sparse = [m for m in model.modules() if isinstance(m, sk.nn.SparseConv2d)]
    masks = [m.format().mask() for m in sparse]
    with torch.no_grad():
        want = model(_x())
        sk.fold_batchnorm(model)
        got = model(_x())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.equal(m.format().mask(), mask) for m, mask in zip(sparse, masks))
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


def test_a_residual_network_keeps_its_outputs():
    model = sk.sparsify(get_model("resnet20").double().eval(), sparsity=0.5, kind="1xN", n=4)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.load_state_dict(_bn(m.num_features, m.num_features).state_dict())
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        sk.fold_batchnorm(model)
        torch.testing.assert_close(model(x), want, rtol=1e-9, atol=1e-9)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


class _TwoUses(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 1), _bn(8, 4)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y  # the conv's output is read twice


class _SharedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.bn = nn.Conv2d(8, 8, 1), nn.Conv2d(8, 8, 1), _bn(8, 5)

    def forward(self, x):
        return self.bn(self.a(x)) + self.bn(self.b(x))


class _Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(8, 8, 1), _bn(8, 6)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow
            return self.bn(self.conv(x))
        return x


@pytest.mark.parametrize("model", [_TwoUses, _SharedBN], ids=["two_uses", "shared_bn"])
def test_bns_the_graph_does_not_allow_stay(model):
    model = model().double().eval()
    with torch.no_grad():
        want = model(_x())
        sk.fold_batchnorm(model)
        torch.testing.assert_close(model(_x()), want, rtol=0, atol=0)
    assert isinstance(model.bn, nn.BatchNorm2d)


def test_training_mode_bn_stays():
    model = _net().train()
    sk.fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 2


def test_untraceable_model_is_a_clear_error():
    with pytest.raises(TypeError, match="model: fold_batchnorm .* torch.fx"):
        sk.fold_batchnorm(_Untraceable().eval())
    with pytest.raises(TypeError, match="model: expected an nn.Module"):
        sk.fold_batchnorm("resnet")
