"""Block1xNConv2d as a drop-in nn.Conv2d, and sparsify(model)."""
import io
import logging

import pytest
import torch
from torch import nn

import sparsekernels as sk
from sparsekernels.nn import Block1xNConv2d


def _conv(*args, **kwargs):
    torch.manual_seed(0)
    return nn.Conv2d(*args, **kwargs).double()


@pytest.mark.parametrize("kwargs", [
    dict(in_channels=8, out_channels=12, kernel_size=3, padding=1),
    dict(in_channels=8, out_channels=12, kernel_size=3, stride=2, groups=2, bias=False),
    dict(in_channels=6, out_channels=10, kernel_size=(3, 1), padding="same", dilation=2),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=8, kernel_size=3, padding=2, padding_mode="circular"),
])
def test_matches_pruned_conv2d(kwargs):
    conv = _conv(**kwargs)
    sparse = Block1xNConv2d.from_dense(conv, n=4, sparsity=0.5)
    dense = sparse.to_dense()
    assert torch.equal(dense.weight, conv.weight * sparse.format().mask())
    x = torch.randn(2, kwargs["in_channels"], 9, 8, dtype=torch.float64)
    torch.testing.assert_close(sparse(x), dense(x))


def test_from_explicit_mask():
    conv = _conv(8, 8, 3)
    mask = torch.zeros_like(conv.weight, dtype=torch.bool)
    mask[0:4, 1] = True
    sparse = Block1xNConv2d.from_dense(conv, n=4, mask=mask)
    assert sparse.values.shape[0] == 1 and torch.equal(sparse.format().mask(), mask)


def test_training_keeps_pruned_weights_pruned():
    sparse = Block1xNConv2d.from_dense(_conv(8, 8, 3, padding=1), n=4, sparsity=0.75)
    mask = sparse.format().mask()
    opt = torch.optim.SGD(sparse.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        sparse(torch.randn(2, 8, 6, 6, dtype=torch.float64)).square().mean().backward()
        opt.step()
    assert sparse.values.grad is not None and sparse.bias.grad is not None
    w = sparse.to_dense().weight
    assert torch.equal(w != 0, mask) and (w[~mask] == 0).all()


def test_to_dtype_and_state_dict_roundtrip():
    sparse = Block1xNConv2d.from_dense(_conv(8, 12, 3, groups=2), n=4, sparsity=0.5).float()
    assert sparse.values.dtype == torch.float32 and sparse.col_idx.dtype == torch.int32
    buf = io.BytesIO()
    torch.save(sparse.state_dict(), buf)
    buf.seek(0)
    fresh = Block1xNConv2d(8, 12, 3, groups=2, n=4)  # fully pruned, different nnzb
    fresh.load_state_dict(torch.load(buf))
    for name in ("values", "row_ptr", "col_idx", "bias"):
        assert torch.equal(getattr(fresh, name), getattr(sparse, name))
    x = torch.randn(1, 8, 5, 5)
    assert torch.equal(fresh(x), sparse(x))


def test_unbatched_forward():
    sparse = Block1xNConv2d.from_dense(_conv(4, 8, 3), n=4, sparsity=0.5)
    x = torch.randn(4, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(sparse(x), sparse.to_dense()(x))


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = nn.Conv2d(16, 24, 1)  # 24 % 16 != 0: padded last row
        self.head = nn.Conv2d(24, 32, 3, padding=1)

    def forward(self, x):
        return self.head(self.pw(self.dw(self.stem(x))))


def test_sparsify_swaps_eligible_convs_and_logs_the_rest(caplog):
    torch.manual_seed(0)
    net = _Net()
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(net, n=16, sparsity=0.5, exclude=["stem"])
    assert type(net.stem) is nn.Conv2d and type(net.dw) is nn.Conv2d
    assert isinstance(net.pw, Block1xNConv2d) and isinstance(net.head, Block1xNConv2d)
    assert "stem left dense: excluded" in caplog.text and "dw left dense: depthwise" in caplog.text
    assert net(torch.randn(1, 3, 8, 8)).shape == (1, 32, 8, 8)


def test_sparsify_can_skip_partial_rows_and_take_per_layer_levels(caplog):
    net = _Net()
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(net, n=16, sparsity={"head": 0.75, "pw": 0.5}, pad_partial=False)
    assert type(net.pw) is nn.Conv2d and "does not divide out_channels/groups=24" in caplog.text
    assert type(net.stem) is nn.Conv2d and "no sparsity level matches" in caplog.text
    assert net.head.sparsity == pytest.approx(0.75)
