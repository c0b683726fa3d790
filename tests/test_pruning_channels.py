"""Channel groups, filter rearrangement, L1 filter pruning, network slimming,
scratch protocols and FLOP counting (sparsekernels.pruning.*, sparsekernels.flops)."""
import copy
import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sparsekernels.flops import count_flops
from sparsekernels.nn import Block1xNConv2d
from sparsekernels.pruning.channels import channel_groups
from sparsekernels.pruning.filter_prune import L1_PRESETS, prune_filters_l1
from sparsekernels.pruning.rearrange import rearrange_filters
from sparsekernels.pruning.scratch import reinitialize, scratch_epochs
from sparsekernels.pruning.slimming import SlimmingRegularizer, channel_sparsity, scaling_bns, slim
from sparsekernels.pruning.surgery import filter_l1_norms

try:
    from sparsekernels.models import get_model
    ZOO_ERROR = None
except ImportError as e:  # the zoo is written in parallel
    get_model, ZOO_ERROR = None, f"sparsekernels.models does not import yet: {e}"
zoo = pytest.mark.skipif(get_model is None, reason=ZOO_ERROR or "")


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The models here are small: on a busy machine, two OpenMP threads per op
    spin-wait for each other far longer than one thread computes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- tiny models -----------------------------------------------------------
def conv_bn(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout))


class VGGChain(nn.Module):
    """conv-BN-ReLU x3 with a pool, flatten of a 4x4 map, two Linears."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2, self.c3 = conv_bn(3, 8), conv_bn(8, 12), conv_bn(12, 16)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 4 * 4, 20)
        self.drop = nn.Dropout(0.5)
        self.fc2 = nn.Linear(20, 5)

    def forward(self, x):  # x: [N, 3, 8, 8]
        x = F.relu(self.c1(x))
        x = self.pool(torch.relu(self.c2(x)))
        x = self.c3(x).relu()
        x = x.view(x.size(0), -1)
        return self.fc2(self.drop(F.relu(self.fc1(x))))


class Bottleneck(nn.Module):
    def __init__(self, cin, mid, cout, stride=1):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv2, self.bn2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv3, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.downsample = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else None

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class TinyResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.block1 = Bottleneck(8, 4, 16, 2)
        self.block2 = Bottleneck(16, 6, 16)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.block2(self.block1(F.relu(self.stem(x))))
        return self.fc(torch.flatten(x.mean((2, 3), keepdim=True), 1))


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [] if expand == 1 else [conv_bn(cin, hidden, 1), nn.ReLU6()]
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(),
                   conv_bn(hidden, cout, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class TinyMobileNetV2(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 8, 3, 2), nn.ReLU6())
        self.b1 = InvertedResidual(8, 8, 2, 1)  # depthwise right after the stem
        self.b2 = InvertedResidual(8, 12, 2, 3)
        self.b3 = InvertedResidual(12, 12, 1, 2)  # residual
        self.b4 = InvertedResidual(12, 16, 1, 2)
        self.head = nn.Sequential(conv_bn(16, 24, 1), nn.ReLU6())
        self.classifier = nn.Linear(24, 5)

    def forward(self, x):
        x = self.head(self.b4(self.b3(self.b2(self.b1(self.stem(x))))))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class SENet(nn.Module):
    """An SE gate (channel multiply with another branch) and a hand-written
    hard-swish (a multiply of the group with itself)."""

    def __init__(self):
        super().__init__()
        self.c1 = conv_bn(3, 8)
        self.fc1, self.fc2 = nn.Conv2d(8, 4, 1), nn.Conv2d(4, 8, 1)
        self.c2 = conv_bn(8, 12)
        self.c3 = nn.Conv2d(12, 6, 3, padding=1)
        self.fc = nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        x = F.relu(self.c1(x))
        scale = torch.sigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))))
        x = self.c2(x * scale)
        x = x * F.relu6(x + 3.0) / 6.0
        x = F.avg_pool2d(self.c3(x), 4)
        return self.fc(torch.flatten(x, 1))


TINY = {  # name -> (builder, input shape of one sample)
    "vgg_chain": (VGGChain, (3, 8, 8)),
    "tiny_resnet": (TinyResNet, (3, 8, 8)),
    "tiny_mobilenet_v2": (TinyMobileNetV2, (3, 16, 16)),
    "se_net": (SENet, (3, 8, 8)),
}


def randomized(model, seed=0):
    """float64, eval mode, random weights and BN statistics (so that a BN left
    unpermuted changes the output)."""
    gen = torch.Generator().manual_seed(seed)
    model = model.double().eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            elif isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2 / fan_in) ** 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
    return model


def sample(shape, batch=2, seed=1):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def assert_same_output(a, b):
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * max(1.0, b.abs().max().item()))


def by_producer(model):
    return {g.producer: g for g in channel_groups(model)}


def coupled_names(model):
    return {g.producer for g in channel_groups(model) if g.coupled}


# ---- channel groups --------------------------------------------------------
def test_groups_of_vgg_chain():
    groups = by_producer(VGGChain())
    assert list(groups) == ["c1.0", "c2.0", "c3.0", "fc1", "fc2"]
    assert groups["c1.0"].bns == ["c1.1"] and groups["c1.0"].consumers == {"c2.0": 1}
    # The flatten of a 4x4 map gives each channel 16 consecutive features.
    assert groups["c3.0"].consumers == {"fc1": 16}
    assert groups["fc1"].consumers == {"fc2": 1} and not groups["fc1"].coupled
    assert groups["fc2"].coupled and "model output" in groups["fc2"].reason
    assert [g.producer for g in groups.values() if g.coupled] == ["fc2"]


def test_groups_of_tiny_resnet_exclude_residual_paths():
    groups = by_producer(TinyResNet())
    assert coupled_names(TinyResNet()) == {
        "block1.conv3", "block1.downsample.0", "block2.conv3", "fc"}
    # The stem feeds block1's conv1 and its downsample conv: both consumers.
    assert groups["stem.0"].consumers == {"block1.conv1": 1, "block1.downsample.0": 1}
    assert not groups["stem.0"].coupled
    assert groups["block2.conv2"].bns == ["block2.bn2"]
    assert groups["block2.conv2"].consumers == {"block2.conv3": 1}
    assert "add" in groups["block1.conv3"].reason and "merges" in groups["block1.conv3"].reason


def test_groups_of_tiny_mobilenet_follow_depthwise_convs():
    groups = by_producer(TinyMobileNetV2())
    assert "b1.conv.0.0" not in groups  # depthwise: part of its input's group
    stem = groups["stem.0.0"]
    assert (stem.bns, stem.depthwise, stem.depthwise_bns) == (
        ["stem.0.1"], ["b1.conv.0.0"], ["b1.conv.0.1"])
    assert stem.consumers == {"b1.conv.2.0": 1} and not stem.coupled
    expand = groups["b3.conv.0.0"]
    assert (expand.depthwise, expand.consumers) == (["b3.conv.2.0"], {"b3.conv.4.0": 1})
    assert not expand.coupled
    # b2's projection feeds b3's residual add; b3's projection is in it.
    assert coupled_names(TinyMobileNetV2()) == {"b2.conv.4.0", "b3.conv.4.0", "classifier"}


def test_groups_of_se_net_couple_the_gate_not_a_self_multiply():
    groups = by_producer(SENet())
    assert groups["c1.0"].coupled and "mul" in groups["c1.0"].reason
    assert groups["fc2"].coupled
    assert not groups["fc1"].coupled and groups["fc1"].consumers == {"fc2": 1}
    # x * relu6(x + 3) / 6 multiplies the group by itself: still one group.
    assert not groups["c2.0"].coupled and groups["c2.0"].consumers == {"c3": 1}
    assert groups["c3"].consumers == {"fc": 4}


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1), nn.Conv2d(8, 2, 1)

    def forward(self, x):
        return self.c(torch.cat([self.a(x), self.b(x)], 1))


class _Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.g = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 4, 3, groups=2)

    def forward(self, x):
        return self.g(self.a(x))


class _HardCodedView(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 4 * 4, 2)

    def forward(self, x):
        return self.fc(self.a(x).view(-1, 64))


class _Shared(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 3, 1)

    def forward(self, x):
        return self.b(self.a(self.a(x)))


class _Unknown(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.b(torch.softmax(self.a(x), 1))


@pytest.mark.parametrize("model, producer, reason", [
    (_Cat(), "a", "concatenated"),
    (_Grouped(), "a", "grouped conv"),
    (_HardCodedView(), "a", "view"),
    (_Shared(), "a", "called 2 times"),
    (_Unknown(), "a", "softmax"),
])
def test_coupling_reasons(model, producer, reason):
    group = by_producer(model)[producer]
    assert group.coupled and reason in group.reason


def test_masked_and_block_sparse_layers_are_coupled_not_traced_through():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(),
                          Block1xNConv2d.from_dense(nn.Conv2d(8, 4, 1), n=4, sparsity=0.5))
    parametrize.register_parametrization(model[2], "weight", _Mask(torch.ones(8, 8, 3, 3)))
    groups = by_producer(model)
    assert list(groups) == ["0", "2"]
    assert "2 has parametrized tensors" in groups["0"].reason
    assert "2 has parametrized tensors" in groups["2"].reason
    assert "Block1xNConv2d" in groups["2"].reason


def test_untraceable_model_is_a_clear_error():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 3, 1)

        def forward(self, x):
            return self.a(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="could not trace Branchy"):
        channel_groups(Branchy())


@zoo
@pytest.mark.parametrize("arch, total, coupled", [
    ("resnet50", 54, 21),  # 16 conv3 + 4 downsample.0 + fc
    ("resnet56", 56, 29),  # stem + 27 conv2 + linear
    ("mobilenet_v1", 15, 1),  # only the classifier
    ("mobilenet_v2", 36, 16),  # 15 projections next to a residual + classifier
    ("mobilenet_v3_small", 43, 29),
    ("mobilenet_v3_large", 49, 33),
    ("vgg16_bn", 14, 1),
])
def test_zoo_group_counts(arch, total, coupled):
    groups = channel_groups(get_model(arch))
    assert (len(groups), sum(g.coupled for g in groups)) == (total, coupled)


@zoo
def test_zoo_resnet50_couples_exactly_the_residual_producers():
    names = coupled_names(get_model("resnet50"))
    expected = {f"layer{s}.{b}.conv3" for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(n)}
    expected |= {f"layer{s}.0.downsample.0" for s in (1, 2, 3, 4)} | {"fc"}
    assert names == expected


# ---- rearrangement ---------------------------------------------------------
@pytest.mark.parametrize("name", list(TINY))
def test_rearrange_keeps_tiny_models_exact(name):
    builder, shape = TINY[name]
    model = randomized(builder())
    x = sample(shape)
    before = model(x)
    norms = {n: filter_l1_norms(model.get_submodule(n)) for n in by_producer(model)}
    perms = rearrange_filters(model)
    assert_same_output(model(x), before)
    assert set(perms) == {g.producer for g in channel_groups(model) if not g.coupled}
    for layer, perm in perms.items():
        assert torch.equal(perm, torch.argsort(norms[layer], stable=True))
        after = filter_l1_norms(model.get_submodule(layer))
        assert torch.all(after[1:] >= after[:-1]), f"{layer} is not sorted ascending"


def test_rearrange_keeps_modules_and_leaves_coupled_layers(caplog):
    model = randomized(TinyResNet())
    conv = model.block1.conv1
    weight = conv.weight
    conv3 = model.block1.conv3.weight.detach().clone()
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        perms = rearrange_filters(model)
    assert model.block1.conv1 is conv and conv.weight is weight  # permuted in place
    # conv3 feeds the residual add: its filters keep their order; only its
    # input channels follow conv2's permutation.
    assert "block1.conv3" not in perms
    assert torch.equal(model.block1.conv3.weight, conv3[:, perms["block1.conv2"]])
    assert any("block1.conv3 left in place" in r.getMessage() and "add" in r.getMessage()
               for r in caplog.records)


def test_rearrange_selected_layers_warns_for_coupled_ones(caplog):
    model = randomized(TinyResNet())
    with caplog.at_level(logging.WARNING, logger="sparsekernels"):
        perms = rearrange_filters(model, ["block2.conv1", "block2.conv3"])
    assert list(perms) == ["block2.conv1"]
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    with pytest.raises(ValueError, match="'nope' is not a Conv2d/Linear producer"):
        rearrange_filters(model, ["nope"])
    with pytest.raises(ValueError, match="layers: expected an iterable"):
        rearrange_filters(model, "block2.conv1")


@zoo
@pytest.mark.parametrize("arch, shape", [
    ("resnet50", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32)), ("mobilenet_v1", (3, 32, 32)),
    ("vgg16_bn", (3, 32, 32)), ("resnet56", (3, 32, 32)), ("mobilenet_v3_small", (3, 32, 32)),
    ("lenet5", (1, 28, 28)),
])
def test_rearrange_keeps_zoo_models_exact(arch, shape):
    model = randomized(get_model(arch))
    x = sample(shape)
    before = model(x)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    norms = {n: filter_l1_norms(model.get_submodule(n)) for n in by_producer(model)}
    perms = rearrange_filters(model)
    assert_same_output(model(x), before)
    for layer, perm in perms.items():
        after = filter_l1_norms(model.get_submodule(layer))
        assert torch.all(after[1:] >= after[:-1]), f"{layer} is not sorted ascending"
        # (its input channels may be permuted too, by the group feeding it)
        torch.testing.assert_close(after, norms[layer][perm], rtol=1e-13, atol=0)
    if arch == "resnet50":  # residual producers keep their filter order
        state = model.state_dict()
        conv3s = [n[: -len(".weight")] for n in original if n.endswith("conv3.weight")]
        for layer in conv3s:
            assert layer not in perms
            conv2 = layer[: -len("conv3")] + "conv2"
            expected = original[layer + ".weight"][:, perms[conv2]]
            assert torch.equal(state[layer + ".weight"], expected)
        # Their BNs (per output channel) are untouched, so is the downsample's.
        residual_bns = [n for n in original if n.endswith(("bn3.weight", "downsample.1.weight"))]
        assert (len(conv3s), len(residual_bns)) == (16, 20)
        for name in residual_bns:
            assert torch.equal(state[name], original[name]), name
        assert all(f"layer{s}.0.downsample.0" not in perms for s in (1, 2, 3, 4))
        assert "layer1.0.conv1" in perms and "conv1" in perms


# ---- L1 filter pruning -------------------------------------------------------
def zero_channels(model, group, dropped):
    """The original network with channels ``dropped`` of ``group`` zeroed
    everywhere (filters, BN affine, depthwise filters, consumer inputs)."""
    with torch.no_grad():
        producer = model.get_submodule(group.producer)
        producer.weight[dropped] = 0
        if producer.bias is not None:
            producer.bias[dropped] = 0
        for name in group.all_bns:
            bn = model.get_submodule(name)
            bn.weight[dropped], bn.bias[dropped] = 0, 0
        for name in group.depthwise:
            model.get_submodule(name).weight[dropped] = 0
        for name, k in group.consumers.items():
            w = model.get_submodule(name).weight
            w.view(w.shape[0], -1, k, *w.shape[2:])[:, dropped] = 0


def dropped_of(kept, channels):
    mask = torch.ones(channels, dtype=torch.bool)
    mask[kept] = False
    return torch.nonzero(mask).flatten()


@pytest.mark.parametrize("name", list(TINY))
def test_l1_pruning_equals_the_zero_masked_original(name):
    builder, shape = TINY[name]
    model = randomized(builder())
    reference = copy.deepcopy(model)
    groups = by_producer(model)
    norms = {n: filter_l1_norms(model.get_submodule(n)) for n in groups}
    kept = prune_filters_l1(model, 0.4)
    assert set(kept) == {n for n, g in groups.items() if not g.coupled}
    for layer, index in kept.items():
        channels = groups[layer].channels
        keep = max(1, round(channels * 0.6))
        assert torch.equal(index, torch.topk(norms[layer], keep).indices.sort().values)
        zero_channels(reference, groups[layer], dropped_of(index, channels))
        module = model.get_submodule(layer)
        assert module.weight.shape[0] == keep
    x = sample(shape)
    assert_same_output(model(x), reference(x))


@zoo
@pytest.mark.parametrize("arch, shape", [
    ("resnet20", (3, 32, 32)), ("mobilenet_v2", (3, 32, 32)), ("mobilenet_v3_small", (3, 32, 32)),
    ("lenet5", (1, 28, 28)),
])
def test_l1_pruning_of_zoo_models_equals_the_zero_masked_original(arch, shape):
    model = randomized(get_model(arch))
    reference = copy.deepcopy(model)
    groups = by_producer(model)
    kept = prune_filters_l1(model, 0.3)
    assert kept and set(kept) == {n for n, g in groups.items() if not g.coupled}
    for layer, index in kept.items():
        zero_channels(reference, groups[layer], dropped_of(index, groups[layer].channels))
    x = sample(shape)
    assert_same_output(model(x), reference(x))


def test_l1_pruning_builds_narrower_modules_of_the_same_dtype():
    model = randomized(TinyMobileNetV2())
    kept = prune_filters_l1(model, {"b3.conv.0.0": 0.5, "stem.*": 0.25})
    assert len(kept["b3.conv.0.0"]) == 12 and len(kept["stem.0.0"]) == 6
    b3 = model.b3.conv
    assert (b3[0][0].out_channels, b3[0][1].num_features) == (12, 12)
    assert (b3[2][0].in_channels, b3[2][0].out_channels, b3[2][0].groups) == (12, 12, 12)
    assert (b3[2][1].num_features, b3[4][0].in_channels) == (12, 12)
    assert all(p.dtype == torch.float64 for p in model.parameters())
    assert model.b1.conv[0][0].groups == 6 and model.b1.conv[2][0].in_channels == 6
    assert not model.training


def test_l1_pruning_linear_after_flatten_keeps_feature_blocks():
    model = randomized(VGGChain())
    reference = copy.deepcopy(model)
    kept = prune_filters_l1(model, {"c3.0": 0.5})
    assert model.fc1.in_features == 8 * 16
    zero_channels(reference, by_producer(reference)["c3.0"], dropped_of(kept["c3.0"], 16))
    x = sample((3, 8, 8))
    assert_same_output(model(x), reference(x))


def test_l1_pruning_refuses_coupled_layers_and_bad_arguments():
    model = TinyResNet()
    with pytest.raises(ValueError, match=r"block1\.conv3 cannot be pruned: .*coupled"):
        prune_filters_l1(model, {"block1.conv3": 0.5})
    with pytest.raises(ValueError, match="'nope' matches no"):
        prune_filters_l1(model, {"nope": 0.5})
    with pytest.raises(ValueError, match=r"ratios\['block1.conv1'\]: expected a pruning ratio"):
        prune_filters_l1(model, {"block1.conv1": 1.5})
    with pytest.raises(ValueError, match="skip: expected an iterable"):
        prune_filters_l1(model, 0.5, skip="stem.0")
    kept = prune_filters_l1(model, 0.5, skip=["stem.*", "block2.*"])
    assert set(kept) == {"block1.conv1", "block1.conv2"}
    assert model.block1.conv1.out_channels == 2 and model.stem[0].out_channels == 8


@zoo
@pytest.mark.parametrize("preset, arch, mflops, reduction, params", [
    # Li et al. (ICLR 2017) Table 2: FLOPs (MACs), FLOP reduction, parameters.
    ("vgg16_bn-A", "vgg16_bn", 206, 0.342, None),
    ("resnet56-A", "resnet56", 112, 0.104, 0.77e6),
    ("resnet56-B", "resnet56", 90.9, 0.276, 0.73e6),
    ("resnet110-A", "resnet110", 213, 0.159, 1.68e6),
    ("resnet110-B", "resnet110", 155, 0.386, 1.16e6),
])
def test_l1_presets_rebuild_the_papers_architectures(preset, arch, mflops, reduction, params):
    model = get_model(arch)
    full = count_flops(model, (3, 32, 32))
    kept = prune_filters_l1(model, L1_PRESETS[preset])
    assert set(kept) == set(L1_PRESETS[preset])
    pruned = count_flops(model, (3, 32, 32))
    assert pruned / 2 / 1e6 == pytest.approx(mflops, rel=0.005)
    assert 1 - pruned / full == pytest.approx(reduction, abs=0.001)
    if params is not None:
        assert sum(p.numel() for p in model.parameters()) == pytest.approx(params, rel=0.01)


# ---- network slimming --------------------------------------------------------
def set_gammas(model, values):
    with torch.no_grad():
        for (_, bn), v in zip(scaling_bns(model), values):
            model.get_submodule(bn).weight.copy_(torch.as_tensor(v, dtype=torch.float64))


def test_slimming_regularizer_adds_s_sign_gamma_to_the_scaling_bns_only():
    model = randomized(TinyMobileNetV2()).train()
    with torch.no_grad():
        model.b3.conv[0][1].weight[0] = -0.5
    reg = SlimmingRegularizer(model, s=1e-3)
    assert "b3.conv.0.1" in reg.bn_names and "b3.conv.2.1" not in reg.bn_names  # depthwise BN
    assert "b3.conv.4.1" not in reg.bn_names  # before the residual add
    with pytest.raises(RuntimeError, match="after loss.backward"):
        reg.apply()
    model(sample((3, 16, 16))).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    reg.apply()
    for name, p in model.named_parameters():
        bn = name.rpartition(".")[0]
        expected = grads[name]
        if name.endswith(".weight") and bn in reg.bn_names:
            expected = expected + 1e-3 * torch.sign(p.detach())
        torch.testing.assert_close(p.grad, expected, rtol=1e-15, atol=1e-18)
    assert model.b3.conv[0][1].weight.grad[0] == grads["b3.conv.0.1.weight"][0] - 1e-3


def test_slim_removes_exactly_percent_globally_and_equals_the_masked_original():
    model = randomized(VGGChain(), seed=3)
    reference = copy.deepcopy(model)
    scored = scaling_bns(model)
    assert [bn for _, bn in scored] == ["c1.1", "c2.1", "c3.1"]  # fc1 has no BN
    gammas = torch.cat([model.get_submodule(bn).weight.detach().abs() for _, bn in scored])
    kept = slim(model, 0.3)
    total = 8 + 12 + 16
    assert sum(len(i) for i in kept.values()) == total - round(0.3 * total)
    offsets = {"c1.0": 0, "c2.0": 8, "c3.0": 20}
    kept_flat = torch.cat([kept[n] + offsets[n] for n in offsets])
    dropped_flat = dropped_of(kept_flat, total)
    assert gammas[dropped_flat].max() <= gammas[kept_flat].min()  # one global threshold
    groups = by_producer(reference)
    for name, index in kept.items():
        zero_channels(reference, groups[name], dropped_of(index, groups[name].channels))
    x = sample((3, 8, 8))
    assert_same_output(model(x), reference(x))
    removed = round(0.3 * total)
    assert channel_sparsity(reference, model, kept.keys()) == pytest.approx(removed / total)


def test_slim_keeps_one_channel_per_layer_and_breaks_ties_in_order():
    model = randomized(VGGChain())
    set_gammas(model, [torch.full((8,), 1e-3), torch.ones(12), torch.ones(16)])
    kept = slim(model, 0.5)  # 18 of 36: c1 keeps 1, then 11 ties go from c2's start
    assert kept["c1.0"].tolist() == [7]
    assert kept["c2.0"].tolist() == [11] and len(kept["c3.0"]) == 16
    assert model.c1[0].out_channels == 1
    with pytest.raises(ValueError, match="would empty a layer"):
        slim(randomized(VGGChain()), 0.95)
    with pytest.raises(ValueError, match=r"percent: expected a fraction"):
        slim(model, 1.0)


def test_channel_sparsity_counts_prunable_producers_by_default():
    model = VGGChain()
    pruned = copy.deepcopy(model)
    prune_filters_l1(pruned, {"c1.0": 0.5, "fc1": 0.5})
    prunable = 8 + 12 + 16 + 20  # fc2 reaches the output
    assert channel_sparsity(model, pruned) == pytest.approx((4 + 10) / prunable)
    with pytest.raises(ValueError, match="original: has no layer 'nope'"):
        channel_sparsity(model, pruned, ["nope"])


# ---- scratch ---------------------------------------------------------------
def test_reinitialize_is_seeded_and_leaves_the_global_rng_alone():
    model = randomized(TinyResNet())
    with torch.no_grad():
        model.stem[1].running_mean.fill_(3.0)
    state = torch.random.get_rng_state()
    a = copy.deepcopy(model)
    reinitialize(a, 7)
    b = reinitialize(copy.deepcopy(model), 7)
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb, p0 in zip(a.state_dict().items(), b.state_dict().values(),
                                  model.state_dict().values()):
        assert torch.equal(pa, pb), name
        if name.endswith("conv1.weight"):
            assert not torch.equal(pa, p0)
    assert torch.equal(a.stem[1].running_mean, torch.zeros(8, dtype=torch.float64))
    assert not torch.equal(reinitialize(copy.deepcopy(model), 8).fc.weight, a.fc.weight)


class _Mask(nn.Module):
    def __init__(self, mask):
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w):
        return w * self.mask


def test_reinitialize_refreshes_the_original_of_a_masked_weight():
    conv = nn.Conv2d(4, 4, 3)
    mask = (torch.rand(conv.weight.shape) > 0.5).float()
    with torch.no_grad():
        conv.weight.fill_(5.0)
    parametrize.register_parametrization(conv, "weight", _Mask(mask))
    reinitialize(conv, 0)
    original = conv.parametrizations.weight.original
    assert original.abs().max() < 1  # default init, not the 5.0 fill
    assert torch.equal(conv.weight, original * mask)


def test_reinitialize_refuses_modules_it_cannot_reset():
    model = nn.Sequential(nn.Conv2d(3, 8, 1),
                          Block1xNConv2d.from_dense(nn.Conv2d(8, 8, 3), n=4, sparsity=0.5))
    with pytest.raises(ValueError, match=r"no reset_parameters\(\) on 1 \(Block1xNConv2d\)"):
        reinitialize(model, 0)


def test_scratch_epochs():
    assert scratch_epochs(160, 100, 40, mode="E") == 160
    full, pruned = 125_485_696, 90_907_264  # ResNet-56 and -56-B MACs
    assert scratch_epochs(160, full, pruned, mode="B") == int(160 * full / pruned) == 220
    assert scratch_epochs(90, 3, 1, mode="B") == 270
    assert scratch_epochs(90, 3, 1, mode="B", cap=180) == 180
    assert scratch_epochs(90, 3, 2, mode="B", cap=180) == 135
    with pytest.raises(ValueError, match="mode: expected 'E' or 'B'"):
        scratch_epochs(160, 2, 1, mode="C")
    with pytest.raises(ValueError, match="flops_pruned: expected at most"):
        scratch_epochs(160, 1, 2, mode="B")
    with pytest.raises(ValueError, match="base_epochs"):
        scratch_epochs(0, 2, 1)


# ---- FLOPs -----------------------------------------------------------------
class _Hand(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)  # 8x8 out
        self.bn = nn.BatchNorm2d(8)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=4)  # 4x4 out
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(F.relu(self.down(self.bn(self.conv(x)))), 1))


HAND_MACS = 8 * 3 * 9 * 64 + 8 * 2 * 9 * 16 + 128 * 10


def test_count_flops_by_hand():
    model = _Hand().train()
    running = model.bn.running_mean.clone()
    assert count_flops(model, (3, 8, 8)) == 2 * HAND_MACS
    assert model.training and model.bn.training and torch.equal(model.bn.running_mean, running)
    with pytest.raises(ValueError, match="input_shape"):
        count_flops(model, (3, -8, 8))


def test_count_flops_skips_exact_zeros_and_masked_weights():
    model = _Hand()
    with torch.no_grad():
        model.conv.weight[:2] = 0  # two filters of 3*9 weights, 64 positions
    assert count_flops(model, (3, 8, 8)) == 2 * (HAND_MACS - 2 * 27 * 64)
    assert count_flops(model, (3, 8, 8), count_zeros=True) == 2 * HAND_MACS
    mask = torch.ones_like(model.fc.weight)
    mask[:, :100] = 0
    parametrize.register_parametrization(model.fc, "weight", _Mask(mask))
    assert count_flops(model, (3, 8, 8)) == 2 * (HAND_MACS - 2 * 27 * 64 - 1000)


@pytest.mark.parametrize("cout, n", [(16, 4), (12, 8)])  # 12/8: a padded last block row
def test_count_flops_block_sparse_equals_its_dense_masked_equivalent(cout, n):
    conv = nn.Conv2d(8, cout, 3, padding=1)
    sparse = Block1xNConv2d.from_dense(conv, n=n, sparsity=0.5)
    dense = sparse.to_dense()
    assert count_flops(sparse, (8, 6, 6)) == count_flops(dense, (8, 6, 6))
    assert count_flops(sparse, (8, 6, 6)) < count_flops(conv, (8, 6, 6))
    fmt = sparse.format()
    assert count_flops(sparse, (8, 6, 6), count_zeros=True) == 2 * fmt.nnzb * 9 * n * 36


def test_count_flops_of_a_pruned_model_drops():
    model = VGGChain()
    full = count_flops(model, (3, 8, 8))
    prune_filters_l1(model, {"c2.0": 0.5})
    # c2 halves: its own 12 filters and c3's 12 input channels (both 8x8 / 4x4 maps).
    saved = 6 * 8 * 9 * 64 + 16 * 6 * 9 * 16
    assert full - count_flops(model, (3, 8, 8)) == 2 * saved
    assert scratch_epochs(160, full, full - 2 * saved, "B") == int(160 * full / (full - 2 * saved))
