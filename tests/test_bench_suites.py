"""The benchmark's layer suites against the model zoo, and its roofline and
input-rotation arithmetic."""
from collections import Counter

import pytest
import torch
from torch import nn

from sparsekernels.bench.roofline import Machine, ideal_speedup
from sparsekernels.bench.suites import SUITES, parse_shape
from sparsekernels.bench.timing import rotation_sets
from sparsekernels.models import MODELS, get_model


def zoo_convs(arch: str) -> Counter:
    """(cin, cout, k, stride, padding, hw) -> count over the non-depthwise convs."""
    found = Counter()

    def hook(m, inputs, _):
        found[(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.padding[0],
               inputs[0].shape[-1])] += 1

    model = get_model(arch).eval()
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.groups == 1:
            m.register_forward_hook(hook)
    with torch.no_grad():
        model(torch.zeros(1, *MODELS[arch].input_shape))
    return found


@pytest.mark.parametrize("suite, arch, kernel", [
    ("resnet50", "resnet50", None),
    ("resnet56", "resnet56", None),
    ("vgg16-cifar", "vgg16_bn", None),
    ("mobilenet_v2-1x1", "mobilenet_v2", 1),
])
def test_suite_lists_every_distinct_conv_of_its_network(suite, arch, kernel):
    want = Counter({key: n for key, n in zoo_convs(arch).items()
                    if kernel is None or key[2] == kernel})
    got = Counter()
    for x in SUITES[suite]:
        got[(x.cin, x.cout, x.k, x.stride, x.padding, x.hw)] += x.count
    assert got == want
    assert len({x.name for x in SUITES[suite]}) == len(SUITES[suite])


def test_vgg16_is_the_cifar_suite_at_224():
    scaled = [(x.cin, x.cout, x.count, x.hw * 7) for x in SUITES["vgg16-cifar"]]
    assert [(x.cin, x.cout, x.count, x.hw) for x in SUITES["vgg16"]] == scaled


def test_parse_shape():
    layer = parse_shape("64,128,3,2,56")
    assert layer.name == "3x3s2_64-128@56" and layer.out_hw == 28 and layer.padding == 1
    for bad in ("64,128,3,2", "a,b,c,d,e", "64,128,0,1,8"):
        with pytest.raises(ValueError):
            parse_shape(bad)


# perf_anchors.md sec. 3.3/3.4: H200, bf16, batch 64, 790 TFLOP/s, 4.3 TB/s.
@pytest.mark.parametrize("shape, ideal", [
    ("64,64,3,1,56", (1.57, 1.57, 1.57)),  # memory-bound whatever the sparsity
    ("128,128,3,1,28", (2.00, 3.12, 3.13)),
    ("256,256,3,1,14", (2.00, 4.00, 6.20)),
    ("512,512,3,1,7", (2.00, 4.00, 10.0)),
    ("16,96,1,1,112", (1.00, 1.00, 1.00)),  # unfused pointwise: nothing to gain
    ("320,1280,1,1,7", (1.33, 1.36, 1.38)),
])
def test_roofline_reproduces_perf_anchors(shape, ideal):
    h200 = Machine(peak_tflops=790, bandwidth_gbs=4300)
    got = [ideal_speedup(parse_shape(shape), 64, 2, 1 - s, h200) for s in (0.5, 0.75, 0.9)]
    assert got == pytest.approx(ideal, abs=0.006)


def test_ideal_needs_a_measured_peak():
    assert ideal_speedup(parse_shape("8,8,3,1,8"), 1, 4, 0.5, Machine(None, 10.0)) is None


def test_rotation_covers_twice_the_cache_within_bounds():
    assert rotation_sets(set_bytes=8 << 20, cache_bytes=32 << 20) == 8
    assert rotation_sets(set_bytes=1 << 30, cache_bytes=32 << 20) == 2
    assert rotation_sets(set_bytes=1, cache_bytes=32 << 20) == 64
