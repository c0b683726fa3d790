"""``export`` of stripe-pruned models (Filter Skeleton folded) to StripeConv2d,
the seed code's removal of filters left without stripes, validated loading of
any kind's ``sparse_layers``, and the ``--l1_preset`` flag.

Pruned models are made in milliseconds: the stripe method is prepared on a
fresh model and its skeleton values and kept stripes are set directly (no
training), BN statistics randomised so that a BN left alone would show.
"""
import json

import pytest
import torch
from torch import nn

from sparsekernels.cli import build_parser, config_from_args
from sparsekernels.formats.block1xn import Block1xN
from sparsekernels.models import get_model
from sparsekernels.nn.block1xn import Block1xNConv2d
from sparsekernels.nn.stripe import StripeConv2d
from sparsekernels.pruning.filter_prune import L1_PRESETS
from sparsekernels.pruning.stripe import following_bns, skeleton_modules
from sparsekernels.train.artifacts import load_model, save_model
from sparsekernels.train.config import RunConfig
from sparsekernels.train.export import export, load_exported
from sparsekernels.train.methods import make_method


# The reference backend and the best one here (the compiled kernels where built).
BACKENDS = ["reference", "auto"]


def _randomise_bns(model, gen):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1, generator=gen)
                m.running_var.uniform_(0.5, 2, generator=gen)
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-1, 1, generator=gen)


def stripe_pruned(path, arch="digits_cnn", dead=None, seed=0, after=None):
    """Save a stripe-pruned ``arch`` to ``path``: about half the stripes of
    every skeleton layer kept, the filters ``dead[layer]`` without any stripe.
    ``after(model)`` may edit the model before it is saved. Returns the masks."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg = RunConfig(method="stripe", arch=arch, pr_target=0.5)
    model = get_model(arch)
    method = make_method(cfg)
    model = method.prepare(model)
    _randomise_bns(model, gen)
    with torch.no_grad():
        for name, s in skeleton_modules(model).items():
            s.skeleton.copy_(torch.rand(s.skeleton.shape, generator=gen) + 0.5)
            s.keep.copy_(torch.rand(s.keep.shape, generator=gen) > 0.5)
            s.keep[:, 1, 1] = True  # every filter keeps a stripe unless listed dead
            for o in (dead or {}).get(name, []):
                s.keep[o] = False
    method.after_step(model)  # what training does after every step: silence dead filters
    model = method.finalize(model)
    if after is not None:
        after(model)
    masks = method.masks(model)
    save_model(path, model, arch, 10, method="stripe", config=json.dumps(cfg.to_dict()),
               masks=masks)
    return masks


def _assert_same_outputs(exported, pruned, arch_input):
    x = torch.randn(3, *arch_input, generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    torch.testing.assert_close(exported.double().eval()(x), pruned.double().eval()(x),
                               rtol=1e-10, atol=1e-10)


def _keep(n, removed):
    keep = torch.ones(n, dtype=torch.bool)
    keep[removed] = False
    return keep


DEAD = {"features.1.0": [0, 5, 63], "features.3.0": [2, 3]}


@pytest.mark.parametrize("backend", BACKENDS)
def test_stripe_export_holds_exactly_the_kept_stripes_and_removes_dead_filters(
        tmp_path, backend):
    masks = stripe_pruned(tmp_path / "pruned.pt", dead=DEAD)
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["sparse_layers"] == ["features.1.0", "features.3.0"]
    assert summary["removed_filters"] == {"features.1.0": 3, "features.3.0": 2}
    assert summary["dead_filters_kept"] == {} and summary["dense_masked_layers"] == []
    model = load_exported(tmp_path / "sparse.pt", backend=backend)
    pruned, _ = load_model(tmp_path / "pruned.pt")

    keep1, keep3 = _keep(64, DEAD["features.1.0"]), _keep(64, DEAD["features.3.0"])
    conv1, conv3 = model.features[1][0], model.features[3][0]
    assert type(conv1) is StripeConv2d and type(conv3) is StripeConv2d
    assert (conv1.out_channels, conv3.in_channels, conv3.out_channels) == (61, 61, 62)
    assert model.features[1][1].num_features == 61 and model.features[3][1].num_features == 62
    assert model.classifier.in_features == 62
    # Exactly the kept stripes: the masks (and weights) of the pruned model
    # without the removed filters and the input channels they fed.
    want1 = masks["features.1.0"][keep1]
    want3 = masks["features.3.0"][keep3][:, keep1]
    assert torch.equal(conv1.format().mask(), want1)
    assert torch.equal(conv3.format().mask(), want3)
    assert conv1.values.shape[0] == int(want1[:, 0].sum())  # one value row per kept stripe
    w1 = pruned.features[1][0].weight.detach()[keep1]
    w3 = pruned.features[3][0].weight.detach()[keep3][:, keep1]
    assert torch.equal(conv1.format().to_dense(), w1)
    assert torch.equal(conv3.format().to_dense(), w3)
    # The following BNs lost the same entries, gamma and beta of the rest unchanged.
    bn = pruned.features[1][1]
    assert torch.equal(model.features[1][1].bias, bn.bias[keep1])
    assert not bn.weight[~keep1].any() and not bn.bias[~keep1].any()  # zeroed in training
    _assert_same_outputs(model, pruned, (1, 8, 8))


def test_saved_and_reloaded_export_equals_too(tmp_path):
    stripe_pruned(tmp_path / "pruned.pt", dead=DEAD)
    export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    first = load_exported(tmp_path / "sparse.pt", backend="reference")
    save_model(tmp_path / "again.pt", first, "digits_cnn", 10)  # a state_dict round trip
    record = torch.load(tmp_path / "sparse.pt", weights_only=True)
    record["state_dict"] = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    torch.save(record, tmp_path / "resaved.pt")
    second = load_exported(tmp_path / "resaved.pt", backend="reference")
    assert json.loads(record["removed_filters"]) == DEAD
    assert json.loads(record["sparse_layers"]) == {"features.1.0": {"kind": "stripe"},
                                                   "features.3.0": {"kind": "stripe"}}
    pruned, _ = load_model(tmp_path / "pruned.pt")
    _assert_same_outputs(second, pruned, (1, 8, 8))
    for a, b in zip(first.state_dict().items(), second.state_dict().items()):
        assert a[0] == b[0] and torch.equal(a[1], b[1])


def test_dead_filter_whose_bn_still_adds_a_constant_stays(tmp_path):
    def unsilence(model):  # a channel that is not zero: removing it would change the output
        with torch.no_grad():
            model.features[3][1].bias[2] = 0.7

    stripe_pruned(tmp_path / "pruned.pt", dead=DEAD, after=unsilence)
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["removed_filters"] == {"features.1.0": 3, "features.3.0": 1}
    assert "features.3.0" in summary["dead_filters_kept"]
    model = load_exported(tmp_path / "sparse.pt", backend="reference")
    conv3 = model.features[3][0]
    assert conv3.out_channels == 63
    assert not conv3.format().mask()[2].any()  # filter 2 stays, with no stripe
    pruned, _ = load_model(tmp_path / "pruned.pt")
    _assert_same_outputs(model, pruned, (1, 8, 8))


def test_every_filter_dead_keeps_one(tmp_path):
    stripe_pruned(tmp_path / "pruned.pt", dead={"features.3.0": list(range(64))})
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["removed_filters"] == {"features.3.0": 63}
    model = load_exported(tmp_path / "sparse.pt", backend="reference")
    assert model.features[3][0].out_channels == 1 and model.features[3][0].values.numel() == 0
    pruned, _ = load_model(tmp_path / "pruned.pt")
    _assert_same_outputs(model, pruned, (1, 8, 8))


def test_residual_block_conv2_keeps_its_channels(tmp_path):
    """ResNet: conv1's dead filters go (bn1 zeroed, conv2's inputs sliced);
    conv2's stay as filters without stripes (its channels meet the residual,
    and bn2 is not zeroed, as in the original)."""
    dead = {"layer1.0.conv1": [1, 4], "layer1.0.conv2": [0, 7]}
    stripe_pruned(tmp_path / "pruned.pt", arch="resnet20", dead=dead)
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["removed_filters"] == {"layer1.0.conv1": 2}
    assert "coupled" in summary["dead_filters_kept"]["layer1.0.conv2"]
    model = load_exported(tmp_path / "sparse.pt", backend="reference")
    block = model.layer1[0]
    assert (block.conv1.out_channels, block.bn1.num_features, block.conv2.in_channels,
            block.conv2.out_channels) == (14, 14, 14, 16)
    assert type(model.conv1) is nn.Conv2d  # the stem is not pruned by default
    assert sum(type(m) is StripeConv2d for m in model.modules()) == 18
    pruned, _ = load_model(tmp_path / "pruned.pt")
    assert pruned.layer1[0].bn2.bias[[0, 7]].abs().min() > 0  # bn2 left alone
    _assert_same_outputs(model, pruned, (3, 32, 32))


def test_training_hooks_zero_the_bns_of_dead_filters():
    """The original zeroes gamma, beta and their gradients of the BN after a
    filter with no stripe every iteration; a step's momentum cannot revive them."""
    cfg = RunConfig(method="stripe", pr_target=0.5)
    model = get_model("digits_cnn")
    method = make_method(cfg)
    model = method.prepare(model)
    skeleton = skeleton_modules(model)["features.1.0"]
    with torch.no_grad():
        skeleton.keep[3] = False
    bn = model.features[1][1]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        model(torch.randn(4, 1, 8, 8)).sum().backward()
        method.after_backward(model, opt)
        assert bn.weight.grad[3] == 0 and bn.bias.grad[3] == 0
        assert bn.weight[3] == 0 and bn.bias[3] == 0
        opt.step()
        method.after_step(model)
        assert bn.weight[3] == 0 and bn.bias[3] == 0
    assert bn.weight[2] != 0
    # In a residual block only bn1 is such a BN.
    bns = following_bns(get_model("resnet20"), ["layer1.0.conv1", "layer1.0.conv2"])
    assert bns == {"layer1.0.conv1": ["layer1.0.bn1"]}


def test_1xn_export_still_builds_block_layers(tmp_path):
    torch.manual_seed(0)
    cfg = RunConfig(method="1xn", N=4, pr_target=0.5)
    model = get_model("digits_cnn")
    masks = {}
    with torch.no_grad():
        for name in ("features.1.0", "features.3.0"):
            conv = model.get_submodule(name)
            masks[name] = Block1xN.from_dense(conv.weight, 4, 0.5).mask()
            conv.weight.mul_(masks[name])
    save_model(tmp_path / "pruned.pt", model, "digits_cnn", 10, method="1xn",
               config=json.dumps(cfg.to_dict()), masks=masks)
    summary = export(tmp_path / "pruned.pt", tmp_path / "sparse.pt")
    assert summary["removed_filters"] == {}  # 1xN keeps its block layout
    record = torch.load(tmp_path / "sparse.pt", weights_only=True)
    assert json.loads(record["sparse_layers"])["features.1.0"] == {"kind": "1xN", "n": 4}
    exported = load_exported(tmp_path / "sparse.pt", backend="reference")
    assert type(exported.features[1][0]) is Block1xNConv2d
    assert torch.equal(exported.features[1][0].format().mask(), masks["features.1.0"])
    pruned, _ = load_model(tmp_path / "pruned.pt")
    _assert_same_outputs(exported, pruned, (1, 8, 8))


# ---- hand-edited files -----------------------------------------------------------

def _layers(value):
    return lambda r: r.update(sparse_layers=json.dumps(value))


def _meta(change):
    def edit(record):
        record["state_dict"]["features.3.0.meta"] = change(record["state_dict"]["features.3.0.meta"])
    return edit


def _with(index, value):
    def change(meta):
        meta = meta.clone()
        meta[index] = value
        return meta
    return change


BAD = {
    "unknown kind": (_layers({"features.3.0": {"kind": "2:4"}}), "kind: expected one of"),
    "no kind": (_layers({"features.3.0": {}}), "kind: expected one of"),
    "stripe with n": (_layers({"features.3.0": {"kind": "stripe", "n": 4}}),
                      "a stripe layer takes the parameters []"),
    "1xN without n": (_layers({"features.3.0": {"kind": "1xN"}}), "takes the parameters ['n']"),
    "other method's kind": (_layers({"features.3.0": {"kind": "1xN", "n": 4}}),
                            "kind '1xN', but method 'stripe' exports 'stripe'"),
    "entry not a dict": (_layers({"features.3.0": "stripe"}), "expected {'kind'"),
    "not a conv": (_layers({"classifier": {"kind": "stripe"}}), "not a Conv2d"),
    "no such layer": (_layers({"nope": {"kind": "stripe"}}), "'nope'"),
    "not JSON": (lambda r: r.update(sparse_layers="["), "sparse_layers: expected JSON"),
    "no config": (lambda r: r.pop("config"), "without the config"),
    "meta wider than the arch": (_meta(_with(0, 10 ** 9)), "features.3.0.meta"),
    "meta kernel": (_meta(_with(2, 5)), "features.3.0.meta"),
    "meta length": (_meta(lambda m: m[:3]), "features.3.0.meta: expected 5 ints"),
    "meta floats": (_meta(lambda m: m.double()), "features.3.0.meta: expected 5 ints"),
    "meta narrower than the values": (_meta(_with(0, 10)), "row_ptr"),
    "tap_idx range": (lambda r: r["state_dict"]["features.3.0.tap_idx"].__setitem__(0, 9),
                      "tap_idx"),
}


@pytest.fixture(scope="module")
def exported_stripe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("exported")
    stripe_pruned(folder / "pruned.pt", dead=DEAD)
    export(folder / "pruned.pt", folder / "sparse.pt")
    return torch.load(folder / "sparse.pt", weights_only=True)


@pytest.mark.parametrize("edit", sorted(BAD))
def test_hand_edited_sparse_layers_are_rejected_naming_the_field(exported_stripe, tmp_path,
                                                                 edit):
    change, message = BAD[edit]
    record = {**exported_stripe, "state_dict": {k: v.clone() for k, v in
                                                exported_stripe["state_dict"].items()}}
    change(record)
    torch.save(record, tmp_path / "edited.pt")
    with pytest.raises(ValueError) as err:
        load_exported(tmp_path / "edited.pt", backend="reference")
    assert str(tmp_path / "edited.pt") in str(err.value) and message in str(err.value)


# ---- the L1-norm presets -----------------------------------------------------

def test_l1_preset_flag_reaches_the_preset():
    args = build_parser().parse_args(["prune", "--method", "l1_filter", "--arch", "resnet56",
                                      "--l1-preset", "resnet56-B"])
    cfg = config_from_args(args)
    assert cfg.l1_preset == "resnet56-B"
    assert RunConfig.from_dict(cfg.to_dict()).l1_preset == "resnet56-B"  # recorded
    model = get_model("resnet56")
    method = make_method(cfg)
    method.finalize(model)
    preset = L1_PRESETS["resnet56-B"]
    assert model.layer1[0].conv1.out_channels == 16 - round(16 * preset["layer1.0.conv1"])
    assert model.layer1[7].conv1.out_channels == 16  # a layer the preset skips
    assert model.layer3[1].conv1.out_channels == 64 - round(64 * preset["layer3.1.conv1"])


@pytest.mark.parametrize("changes, message", [
    (dict(method="l1_filter", arch="resnet56", l1_preset="resnet56-C"),
     "l1_preset: unknown 'resnet56-C'; expected one of ['resnet110-A'"),
    (dict(method="l1_filter", arch="resnet110", l1_preset="resnet56-A"),
     "l1_preset: 'resnet56-A' prunes layers of arch 'resnet56', not of arch 'resnet110'"),
    (dict(method="slimming", arch="vgg16_bn", l1_preset="vgg16_bn-A"),
     "l1_preset: only for method 'l1_filter'"),
])
def test_bad_l1_preset_is_rejected(changes, message):
    with pytest.raises(ValueError) as err:
        RunConfig().replace(**changes)
    assert message in str(err.value)
