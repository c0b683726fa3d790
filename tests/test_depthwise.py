"""DepthwiseConv2d: the dense depthwise conv's NCHW CPU kernel against dense
float64 F.conv2d, on odd shapes, strides, paddings, dilations and layouts,
with its fused activation; bad operands named; use_depthwise_kernel swaps
only depthwise convs and keeps a network's outputs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsekernels as sk
from sparsekernels._ext import C
from sparsekernels.activation import ACTIVATIONS, NO_CLAMP
from sparsekernels.models import get_model
from sparsekernels.testing import LOW_PRECISION

pytestmark = pytest.mark.skipif(C is None, reason="compiled kernels unavailable")

CASES = {
    "3x3": dict(),
    "3x3_s2": dict(stride=2, hw=(15, 12)),
    "3x3_s2_odd": dict(stride=2, hw=(9, 17), channels=5),
    "5x5_s2": dict(kernel=5, stride=2, padding=2, hw=(14, 19)),
    "5x3_asym": dict(kernel=(5, 3), stride=(1, 2), padding=(2, 0), dilation=(1, 2),
                     hw=(11, 13)),
    "1x1": dict(kernel=1, padding=0),
    "dilation2": dict(dilation=2, padding=2, hw=(10, 23)),
    "stride3_wide_pad": dict(stride=3, padding=4, hw=(10, 11)),
    "no_pad": dict(padding=0, hw=(7, 40)),
    "wide_row": dict(hw=(5, 70), channels=3),          # several register tiles a row
    "tiny": dict(hw=(1, 1), kernel=1, padding=0),
    "pad_only": dict(hw=(1, 2), kernel=3, padding=1),  # most taps read padding
    "batch3": dict(batch=3, channels=24, hw=(8, 8)),
    "empty_batch": dict(batch=0),
    "no_bias": dict(bias=False),
    "channels_last": dict(channels_last=True, channels=16),
    "noncontiguous": dict(noncontiguous=True),
}


def _case(batch=2, channels=7, hw=(9, 11), kernel=3, stride=1, padding=1, dilation=1,
          bias=True, channels_last=False, noncontiguous=False, dtype=torch.float64):
    gen = torch.Generator().manual_seed(0)
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(channels, channels, k, stride, padding, dilation, groups=channels,
                     bias=bias, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
        if bias:
            conv.bias.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
    x = torch.randn(batch, channels, *hw, generator=gen, dtype=torch.float64) * 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noncontiguous:
        x = torch.cat([x, x], dim=3)[..., ::2]
    want = conv(x)
    module = sk.nn.DepthwiseConv2d.from_conv(copy.deepcopy(conv).to(dtype))
    return module, x.to(dtype), want


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_against_float64(name, activation, dtype):
    module, x, want = _case(**CASES[name], dtype=dtype)
    module.activation = activation
    if activation:
        want = ACTIVATIONS[activation].apply(want)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    with torch.no_grad():
        out = module(x)
    assert out.dtype == dtype and out.shape == want.shape
    layout = torch.channels_last if CASES[name].get("channels_last") else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out.double(), want, rtol=tol, atol=tol)
    # autograd (nn.Conv2d's forward, then the activation) gives the same
    torch.testing.assert_close(module(x.clone().requires_grad_()).double(), want, rtol=tol,
                               atol=tol)


@pytest.mark.parametrize("dtype", LOW_PRECISION)
def test_low_precision_within_twice_pytorchs_error(dtype):
    module, x, want = _case(channels=16, hw=(12, 13), stride=2)
    conv = module.to_dense()
    with torch.no_grad():
        torch_err = (conv.to(dtype)(x.to(dtype)).double() - want).abs().max().item()
        module = module.to(dtype)
        err = (module(x.to(dtype)).double() - want).abs().max().item()
    assert err <= max(2 * torch_err, 4 * torch.finfo(dtype).eps)


def test_nan_is_kept_by_the_fused_clamp():
    module, x, _ = _case()
    x[0, 2, 4, 5] = float("nan")
    module.activation = "relu6"
    with torch.no_grad():
        out = module(x)
    want = F.relu6(module.to_dense()(x))
    assert out.isnan().sum() == want.isnan().sum() > 0
    torch.testing.assert_close(out, want, equal_nan=True)


def _args(x, weight, bias=None, stride=(1, 1), padding=(1, 1), dilation=(1, 1),
          bounds=NO_CLAMP):
    return C.depthwise_forward(x, weight, bias, list(stride), list(padding), list(dilation),
                               *bounds)


@pytest.mark.parametrize("call,match", [
    (lambda x, w: _args(x, w.float()), "weight: expected dtype"),
    (lambda x, w: _args(x, w[:5]), r"weight: expected shape \[7, 1"),
    (lambda x, w: _args(x, w.repeat(1, 2, 1, 1)), r"weight: expected shape \[7, 1"),
    (lambda x, w: _args(x, w, torch.zeros(3, dtype=torch.float64)), r"bias: expected shape \[7\]"),
    (lambda x, w: _args(x[0], w), "input: expected a 4-D tensor"),
    (lambda x, w: _args(x.half(), w.half()), "input: expected dtype float32 or float64"),
    (lambda x, w: _args(x, w, stride=(0, 1)), r"stride\[0\]: expected an integer"),
    (lambda x, w: _args(x, w, padding=(-1, 1)), r"padding\[0\]: expected an integer"),
    (lambda x, w: _args(x, w, bounds=(1.0, 0.0)), "out_min, out_max: expected"),
    (lambda x, w: _args(x[..., :1, :1], w, padding=(0, 0)), "input: spatial size"),
])
def test_bad_operands_are_named(call, match):
    module, x, _ = _case()
    with pytest.raises((ValueError, TypeError, NotImplementedError), match=match):
        call(x, module.weight.detach())


def test_wrong_channel_count_gets_pytorchs_error():
    module, x, _ = _case()
    with torch.no_grad(), pytest.raises(RuntimeError, match="channels"):
        module(x[:, :5])


def test_only_depthwise_convs_are_swapped():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=8),
                          nn.Conv2d(8, 16, 3, groups=8), nn.Conv2d(16, 16, 1, groups=4))
    sk.nn.use_depthwise_kernel(model)
    assert [type(m).__name__ for m in model] == ["Conv2d", "DepthwiseConv2d", "Conv2d",
                                                  "Conv2d"]
    with pytest.raises(ValueError, match="conv: expected a depthwise nn.Conv2d"):
        sk.nn.DepthwiseConv2d.from_conv(model[2])


def test_a_pruned_mobilenet_keeps_its_outputs():
    torch.manual_seed(0)
    model = sk.sparsify(get_model("mobilenet_v2").double().eval(), sparsity=0.75, n=8)
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        sk.fold_batchnorm(model)
        sk.nn.use_depthwise_kernel(model)
        fused = sk.fuse_activations(model)
        got = fused(x)
    depthwise = [m for m in fused.modules() if isinstance(m, sk.nn.DepthwiseConv2d)]
    assert len(depthwise) == 17 and all(m.activation == "relu6" for m in depthwise)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
