"""The NCHW window kernels: DepthwiseConv2d against dense float64 F.conv2d
and MaxPool2d against float64 F.max_pool2d, on odd shapes, strides,
paddings, dilations and layouts, the conv with its fused activation; bad
operands named; use_nchw_kernels swaps only depthwise convs and max pools
and keeps a network's outputs."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    # rows stored from the registers: whole vectors a row, and a row's last
    # vector overhanging into the next (stride 2: 33 columns)
    "rows_whole_vectors": dict(hw=(6, 32)),
    "rows_overhang_s2": dict(stride=2, hw=(9, 66)),
    "tiny": dict(hw=(1, 1), kernel=1, padding=0),
    "pad_only": dict(hw=(1, 2), kernel=3, padding=1),  # most taps read padding
    "batch3": dict(batch=3, channels=24, hw=(8, 8)),
    # rows narrower than a vector (AVX-512 and AVX2), many images
    "narrow_batch17": dict(batch=17, channels=3, hw=(6, 7)),
    "narrow_s2": dict(batch=5, channels=4, stride=2, hw=(13, 9)),
    # planes too large for channels in the lanes, on every ISA: read in
    # place at column stride 2 (a row of whole windows and edge ones), else
    # through the copy; and one just inside the strided budget
    "s2_in_place_wide": dict(stride=2, padding=0, hw=(130, 230), channels=2),
    "s1_large_plane": dict(hw=(130, 230), channels=2),
    "s2_channel_lanes_large": dict(stride=2, hw=(60, 75), channels=9),
    "empty_batch": dict(batch=0),
    "no_bias": dict(bias=False),
    "channels_last": dict(channels_last=True, channels=16),
    "noncontiguous": dict(noncontiguous=True),
}


def _randomised(conv: nn.Conv2d, batch, hw, seed, channels_last, noncontiguous) -> Tensor:
    """Fills float64 ``conv``'s weight and bias from a seeded generator;
    returns an input of its channels (channels_last, or a strided view)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen, dtype=torch.float64))
        if conv.bias is not None:
            conv.bias.copy_(torch.randn(conv.out_channels, generator=gen, dtype=torch.float64))
    x = torch.randn(batch, conv.in_channels, *hw, generator=gen, dtype=torch.float64) * 2
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noncontiguous:
        x = torch.cat([x, x], dim=3)[..., ::2]
    return x


def _case(batch=2, channels=7, hw=(9, 11), kernel=3, stride=1, padding=1, dilation=1,
          bias=True, channels_last=False, noncontiguous=False, dtype=torch.float64):
    k = (kernel, kernel) if isinstance(kernel, int) else kernel
    conv = nn.Conv2d(channels, channels, k, stride, padding, dilation, groups=channels,
                     bias=bias, dtype=torch.float64)
    x = _randomised(conv, batch, hw, 0, channels_last, noncontiguous)
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
    (lambda x, w: _args(x.half(), w.half()), "input: expected dtype torch.float32 or torch.float64"),
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


def test_only_depthwise_and_image_convs_and_max_pools_are_swapped():
    model = nn.Sequential(nn.Conv2d(4, 8, 3), nn.Conv2d(8, 8, 3, groups=8),
                          nn.Conv2d(8, 16, 3, groups=8), nn.Conv2d(16, 16, 1, groups=4),
                          nn.Conv2d(5, 8, 3), nn.Conv2d(4, 4, 3, groups=2),
                          nn.MaxPool2d(3, 2, 1), nn.AvgPool2d(2))
    sk.nn.use_nchw_kernels(model)
    assert [type(m).__name__ for m in model] == ["InputConv2d", "DepthwiseConv2d", "Conv2d",
                                                  "Conv2d", "Conv2d", "Conv2d", "MaxPool2d",
                                                  "AvgPool2d"]
    assert isinstance(model[6], sk.nn.MaxPool2d)
    with pytest.raises(ValueError, match="conv: expected a depthwise nn.Conv2d"):
        sk.nn.DepthwiseConv2d.from_conv(model[2])
    with pytest.raises(ValueError, match=r"conv: expected an nn.Conv2d on an image"):
        sk.nn.InputConv2d.from_conv(model[4])


# ---- image convs (the stem) on the 1xN kernel -----------------------------------
IMAGE_CASES = {
    "mobilenet_stem": dict(),
    "resnet_stem": dict(cout=64, kernel=7, stride=2, padding=3, hw=(23, 20)),
    "cifar_stem": dict(cout=16, stride=1, hw=(9, 32)),
    "gray_odd_cout": dict(cin=1, cout=6, kernel=5, stride=1, padding=2),
    "dilated_asym": dict(cin=4, cout=24, kernel=(3, 5), stride=(2, 1), padding=(2, 1),
                         dilation=(2, 1)),
    "no_bias": dict(bias=False),
    "empty_batch": dict(batch=0),
    "channels_last": dict(channels_last=True),
    "noncontiguous": dict(noncontiguous=True),
}


def _image_case(batch=2, cin=3, cout=32, hw=(17, 19), kernel=3, stride=2, padding=1,
                dilation=1, bias=True, channels_last=False, noncontiguous=False):
    conv = nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bias,
                     dtype=torch.float64)
    return conv, _randomised(conv, batch, hw, 2, channels_last, noncontiguous)


@pytest.mark.parametrize("name", IMAGE_CASES)
@pytest.mark.parametrize("activation", [None, "relu6"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_image_conv_against_float64(name, activation, dtype):
    conv, x = _image_case(**IMAGE_CASES[name])
    want = conv(x)
    want = want if activation is None else ACTIVATIONS[activation].apply_(want)
    module = sk.nn.InputConv2d.from_conv(copy.deepcopy(conv).to(dtype)).eval()
    module.activation = activation
    with torch.no_grad():
        got = module(x.to(dtype))
    assert module.__dict__.get("_blocks") is not None or x.shape[0] == 0
    assert got.dtype == dtype and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last) == (
        IMAGE_CASES[name].get("channels_last", False))
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol)


def test_image_conv_follows_its_weight_and_keeps_pytorchs_state_and_gradient():
    conv, x = _image_case()
    module = sk.nn.InputConv2d.from_conv(copy.deepcopy(conv))
    assert module.state_dict().keys() == conv.state_dict().keys()
    with torch.no_grad():
        module(x)
        module.weight.mul_(-2)  # in place: the kept blocks are rebuilt
        torch.testing.assert_close(module(x), F.conv2d(x, conv.weight * -2, conv.bias, 2, 1),
                                   rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        want = module(x)
        clone = copy.deepcopy(module)  # a copy builds its own blocks
        assert "_blocks" not in clone.__dict__
        torch.testing.assert_close(clone(x), want, rtol=0, atol=0)
        module.float()  # a dtype move drops the blocks of the old weight
        torch.testing.assert_close(module(x.float()), want.float(), rtol=1e-5, atol=1e-5)
    module.double()
    out = module(x.requires_grad_())  # autograd: PyTorch's conv
    out.sum().backward()
    assert x.grad is not None and module.weight.grad is not None


# ---- max pool -----------------------------------------------------------------
POOLS = {
    "resnet_stem": dict(kernel=3, stride=2, padding=1, hw=(17, 16)),
    "2x2": dict(kernel=2, stride=2, padding=0, hw=(9, 12)),
    "3x3_s1": dict(kernel=3, stride=1, padding=1),
    "5x5_s3": dict(kernel=5, stride=3, padding=2, hw=(16, 21)),
    "asym_dilated": dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), dilation=(2, 1),
                         hw=(13, 10)),
    "tiny": dict(kernel=3, stride=2, padding=1, hw=(1, 2)),
    "wide_row": dict(kernel=3, stride=2, padding=1, hw=(5, 75)),
    "empty_batch": dict(batch=0),
    "channels_last": dict(channels_last=True),
    "noncontiguous": dict(noncontiguous=True),
    "narrow_batch17": dict(kernel=3, stride=1, padding=1, batch=17, hw=(6, 7)),
}


def _pool_case(batch=2, channels=6, hw=(11, 13), kernel=3, stride=2, padding=1, dilation=1,
               channels_last=False, noncontiguous=False):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, *hw, generator=gen, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    if noncontiguous:
        x = torch.cat([x, x], dim=3)[..., ::2]
    pool = sk.nn.MaxPool2d(kernel, stride, padding, dilation)
    return pool, x, F.max_pool2d(x, kernel, stride, padding, dilation)


@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_max_pool_against_float64(name, dtype):
    pool, x, want = _pool_case(**POOLS[name])
    with torch.no_grad():
        out = pool(x.to(dtype))
    assert out.dtype == dtype and out.shape == want.shape
    layout = torch.channels_last if POOLS[name].get("channels_last") else torch.contiguous_format
    assert out.is_contiguous(memory_format=layout)
    torch.testing.assert_close(out.double(), want.to(dtype).double(), rtol=0, atol=0)


def test_max_pool_propagates_nan_and_keeps_minus_inf():
    pool, x, _ = _pool_case()
    x[0, 1, 3, 4] = float("nan")
    x[1, 2] = float("-inf")  # a whole plane: the padding must not win over it
    with torch.no_grad():
        out = pool(x)
    torch.testing.assert_close(out, F.max_pool2d(x, 3, 2, 1), equal_nan=True, rtol=0, atol=0)
    assert out.isnan().any() and (out[1, 2] == float("-inf")).all()


@pytest.mark.parametrize("kwargs", [dict(ceil_mode=True), dict(return_indices=True)])
def test_max_pool_arguments_the_kernel_does_not_take_run_pytorchs(kwargs):
    x = torch.randn(1, 3, 10, 11)
    pool = sk.nn.MaxPool2d(3, 2, 1, **kwargs)
    with torch.no_grad():
        got, want = pool(x), nn.MaxPool2d(3, 2, 1, **kwargs)(x)
    for g, w in zip(got if isinstance(got, tuple) else [got],
                    want if isinstance(want, tuple) else [want]):
        assert torch.equal(g, w)


def test_max_pool_gradient_is_pytorchs():
    x = torch.randn(1, 3, 8, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(sk.nn.MaxPool2d(3, 2, 1), (x,))


@pytest.mark.parametrize("call,match", [
    (lambda x: C.max_pool_forward(x, [3, 3], [2, 2], [2, 1], [1, 1]),
     "padding: expected at most half the kernel size"),
    (lambda x: C.max_pool_forward(x, [3], [2, 2], [1, 1], [1, 1]),
     "kernel_size: expected 2 entries"),
    (lambda x: C.max_pool_forward(x, [3, 3], [0, 2], [1, 1], [1, 1]),
     r"stride\[0\]: expected an integer"),
    (lambda x: C.max_pool_forward(x.int(), [3, 3], [2, 2], [1, 1], [1, 1]),
     "input: expected dtype torch.float32 or torch.float64"),
    (lambda x: C.max_pool_forward(x[0], [3, 3], [2, 2], [1, 1], [1, 1]),
     "input: expected a 4-D tensor"),
])
def test_max_pool_bad_operands_are_named(call, match):
    _, x, _ = _pool_case()
    with pytest.raises((ValueError, TypeError), match=match):
        call(x)


@pytest.mark.parametrize("arch,swapped,stem,stem_activation", [
    ("mobilenet_v2", 17, "features.0.0", "relu6"),  # depthwise convs, each with a fused ReLU6
    ("resnet18", 1, "conv1", "relu"),               # the stem's max pool
])
def test_pruned_networks_keep_their_outputs(arch, swapped, stem, stem_activation):
    """The stem left dense (as the seed papers leave it) runs as an InputConv2d."""
    torch.manual_seed(0)
    model = sk.sparsify(get_model(arch).double().eval(), sparsity=0.75, n=8, exclude=[stem])
    x = torch.randn(1, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        want = model(x)
        sk.fold_batchnorm(model)
        sk.nn.use_nchw_kernels(model)
        fused = sk.fuse_epilogues(model)
        got = fused(x)
    kernels = [m for m in fused.modules() if isinstance(m, (sk.nn.DepthwiseConv2d,
                                                            sk.nn.MaxPool2d))]
    assert len(kernels) == swapped
    assert all(m.activation == "relu6" for m in kernels if isinstance(m, sk.nn.DepthwiseConv2d))
    stems = [m for m in fused.modules() if isinstance(m, sk.nn.InputConv2d)]
    assert len(stems) == 1 and stems[0].activation == stem_activation
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
