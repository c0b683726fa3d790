"""sparsify(from_zeros=True): a model pruned elsewhere converts exactly as its
zeros are, to the kind whose structure they have, with no re-pruning."""
import io
import logging

import pytest
import torch
from torch import nn
from torch.ao.pruning import BaseSparsifier
from torch.nn.utils import parametrize, prune

import sparsekernels as sk
from sparsekernels import from_zeros
from sparsekernels.kinds import KINDS, by_label
from sparsekernels.nn import Block1xNConv2d
from sparsekernels.nn.pattern import PatternConv2d
from sparsekernels.nn.stripe import StripeConv2d

PRUNE = {  # what makes each kind's zeros: its own format's pruning
    "1xN": lambda w, groups: sk.Block1xN.from_dense(w, n=8, sparsity=0.5, groups=groups),
    "stripe": lambda w, groups: sk.Stripe.from_dense(w, sparsity=0.6, groups=groups),
    "pattern": lambda w, groups: sk.Pattern.from_dense(w, sparsity=0.7, groups=groups),
}


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(8, 32, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(32, 16, 3, padding=1, groups=2)).double()


def _zeroed(net: nn.Module, make) -> nn.Module:
    """``net`` with each conv's weight replaced by ``make(weight, groups)``'s decoding."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.copy_(make(m.weight, m.groups).to_dense())
    return net


def _pruned(label: str, seed: int = 0) -> nn.Module:
    return _zeroed(_net(seed), PRUNE[label])


def _random_zeros(net: nn.Module, seed: int = 1) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(torch.rand(m.weight.shape, generator=gen) >= 0.5)
    return net


@torch.no_grad()
def _assert_same_outputs(model, reference, channels=8):
    for _ in range(2):  # fresh inputs each time
        x = torch.randn(2, channels, 9, 9, dtype=torch.float64)
        want = reference(x)
        torch.testing.assert_close(model(x), want, rtol=1e-12,
                                   atol=1e-12 * float(want.abs().max()))


# ---- the formats ------------------------------------------------------------
@pytest.mark.parametrize("label", list(PRUNE))
def test_from_zeros_decodes_the_weight_bit_exactly_zeros_inside_kept_units_included(label):
    torch.manual_seed(0)
    w = PRUNE[label](torch.randn(32, 16, 3, 3, dtype=torch.float64), 2).to_dense()
    w[w != 0] *= (torch.rand(int((w != 0).sum()), dtype=torch.float64) > 0.05)  # stray zeros
    fmt = by_label(label).format.from_zeros(w, groups=2)
    assert torch.equal(fmt.to_dense(), w)
    assert fmt.sparsity > 0.3  # pattern: stray zeros leave only its dropped kernels


def test_1xn_detects_the_largest_n_whose_blocks_hold_the_zero_kernels():
    torch.manual_seed(0)
    w = torch.randn(32, 16, 3, 3)
    for n in (1, 2, 4, 8, 16, 32):
        pruned = sk.Block1xN.from_dense(w, n=n, sparsity=0.5).to_dense()
        assert sk.Block1xN.from_zeros(pruned).n == n
    eight = sk.Block1xN.from_dense(w, n=8, sparsity=0.5).to_dense()
    assert sk.Block1xN.from_zeros(eight, n=4).n == 4  # a given N is used as given
    # 24 channels per group: a padded 16-row fits only with pad_partial
    padded = sk.Block1xN.from_dense(w[:24], n=16, sparsity=0.5).to_dense()
    assert sk.Block1xN.from_zeros(padded).n == 16
    assert sk.Block1xN.from_zeros(padded, pad_partial=False).n == 8


def test_pattern_reads_many_distinct_masks_as_whole_kernels_only():
    torch.manual_seed(0)
    w = _random_zeros(nn.Conv2d(16, 16, 3)).weight.detach()
    fmt = sk.Pattern.from_zeros(w)
    assert fmt.num_patterns == 1 and torch.equal(fmt.to_dense(), w)


# ---- sparsify(from_zeros=True) --------------------------------------------------
@pytest.mark.parametrize("label", list(PRUNE))
def test_a_model_pruned_to_a_kind_converts_to_it_with_the_same_outputs(label):
    reference = _pruned(label)
    model = sk.sparsify(_pruned(label), kind=label, from_zeros=True)
    assert all(isinstance(m, by_label(label).module) for m in (model[0], model[2]))
    for conv, sparse in zip((reference[0], reference[2]), (model[0], model[2])):
        assert torch.equal(sparse.to_dense().weight, conv.weight)
    if label == "1xN":
        assert model[0].n == 8 and model[2].n == 8
    _assert_same_outputs(model, reference)


def test_a_given_n_is_honoured_and_pad_partial_still_skips():
    model = sk.sparsify(_pruned("1xN"), from_zeros=True, n=4)
    assert model[0].n == 4 and model[2].n == 4
    _assert_same_outputs(model, _pruned("1xN"))
    net = nn.Sequential(nn.Conv2d(8, 24, 3)).double()
    _zeroed(net, lambda w, g: sk.Block1xN.from_dense(w, n=8, sparsity=0.5))
    sk.sparsify(net, from_zeros=True, n=16, pad_partial=False)
    assert type(net[0]) is nn.Conv2d
    assert sk.sparsify(net, from_zeros=True, pad_partial=False)[0].n == 8


class _Block1xNSparsifier(BaseSparsifier):
    """1xN blocks (N output channels x one input channel x the kernel) by L1
    norm. torch.ao's WeightNormSparsifier cannot: it blocks a weight's last
    two dims (a conv's Kh x Kw) and fails on 4-D weights."""

    def __init__(self, n: int, sparsity_level: float):
        super().__init__(defaults={"n": n, "sparsity_level": sparsity_level})

    def update_mask(self, module, tensor_name, n, sparsity_level, **kwargs):
        mask = getattr(module.parametrizations, tensor_name)[0].mask
        w = getattr(module.parametrizations, tensor_name).original.detach()
        cout, cin, kh, kw = w.shape
        norms = w.reshape(cout // n, n, cin, kh * kw).abs().sum((1, 3))
        keep = norms > norms.flatten().kthvalue(int(sparsity_level * norms.numel())).values
        mask.data = keep[:, None, :, None, None].expand(-1, n, -1, kh, kw).reshape(w.shape)


def test_a_torch_ao_pruned_model_converts_before_squash_mask():
    def pruned():
        net = _net()
        sparsifier = _Block1xNSparsifier(n=4, sparsity_level=0.5)
        sparsifier.prepare(net, [{"tensor_fqn": "0.weight"}, {"tensor_fqn": "2.weight"}])
        sparsifier.step()
        return net

    reference, model = pruned(), pruned()
    assert type(model[0]) is not nn.Conv2d and parametrize.is_parametrized(model[0])
    sk.sparsify(model, from_zeros=True)
    assert isinstance(model[0], Block1xNConv2d) and isinstance(model[2], Block1xNConv2d)
    assert model[0].n == 4 and model[2].n == 4
    _assert_same_outputs(model, reference)


def test_filters_pruned_by_ln_structured_fit_every_kind():
    def pruned():
        net = _net()
        for conv in (net[0], net[2]):
            prune.ln_structured(conv, "weight", amount=0.5, n=2, dim=0)
        return net

    for spec in KINDS.values():
        model = sk.sparsify(pruned(), kind=spec.label, from_zeros=True)
        assert isinstance(model[0], spec.module) and isinstance(model[2], spec.module)
        _assert_same_outputs(model, pruned())


def test_unstructured_zeros_stay_dense_and_the_log_gives_the_fractions(caplog):
    model = _random_zeros(nn.Sequential(nn.Conv2d(16, 16, 3)).double())
    zero_fraction = float((model[0].weight == 0).double().mean())
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(model, kind="auto", from_zeros=True,
                    example_input=torch.randn(1, 16, 8, 8, dtype=torch.float64))
    assert type(model[0]) is nn.Conv2d
    line = next(r.getMessage() for r in caplog.records if "left dense" in r.getMessage())
    assert "its zeros do not have the 1xN or stripe or pattern structure" in line
    assert f"zero fraction {zero_fraction:.3f}" in line
    for label in ("1xN(n=", "stripe structured sparsity", "pattern structured sparsity"):
        assert label in line
    assert ">= 0.05" in line and ">= 90%" in line


def _timed_as(monkeypatch, ms: dict[str, float]) -> list[set]:
    """Make auto's timer report ``ms`` per label (the machine's speed never
    decides a test); returns the label sets it was asked to time."""
    asked = []

    def fake(modules, shape, device, dtype):
        asked.append(set(modules))
        return {label: ms[label] for label in modules}

    monkeypatch.setattr(from_zeros, "median_forward_ms", fake)
    return asked


@pytest.mark.parametrize("fastest, module", [("1xN", Block1xNConv2d), ("pattern", PatternConv2d)])
def test_auto_keeps_the_fastest_fitting_kind_with_the_same_outputs(monkeypatch, caplog, fastest,
                                                                   module):
    reference = _pruned("1xN")
    model = _pruned("1xN").train()
    x = torch.randn(2, 8, 9, 9, dtype=torch.float64)
    ms = {"1xN": 2.0, "pattern": 2.0, "stripe": 2.0, from_zeros.DENSE: 3.0, fastest: 1.0}
    asked = _timed_as(monkeypatch, ms)
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(model, kind="auto", from_zeros=True, example_input=x)
    # 1xN blocks are whole zero kernels: 1xN and pattern fit, stripe does not;
    # the dense conv is always a candidate
    assert asked == [{"1xN", "pattern", from_zeros.DENSE}] * 2
    assert all(isinstance(m, module) for m in (model[0], model[2]))
    assert f"0 auto: 1xN {ms['1xN']:.3f} ms" in caplog.text and f"-> {fastest}" in caplog.text
    assert model.training and model[1].training  # the example pass restored the modes
    _assert_same_outputs(model, reference)


def test_auto_leaves_a_layer_dense_when_the_dense_conv_is_fastest(monkeypatch, caplog):
    model = _pruned("1xN")
    _timed_as(monkeypatch, {"1xN": 2.0, "pattern": 2.0, from_zeros.DENSE: 1.0})
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(model, kind="auto", from_zeros=True,
                    example_input=torch.randn(1, 8, 9, 9, dtype=torch.float64))
    assert type(model[0]) is nn.Conv2d and type(model[2]) is nn.Conv2d
    assert "left dense: the dense conv is the fastest (1xN 2.000 ms" in caplog.text


def test_auto_times_the_only_fitting_kind_against_dense(monkeypatch):
    # 64 filters with their own stripes: more distinct kernel masks than a
    # pattern library, so only stripe fits
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(8, 64, 3)).double()
    _zeroed(net, PRUNE["stripe"])
    asked = _timed_as(monkeypatch, {"stripe": 1.0, from_zeros.DENSE: 2.0})
    sk.sparsify(net, kind="auto", from_zeros=True, example_input=torch.randn(1, 8, 6, 6).double())
    assert asked == [{"stripe", from_zeros.DENSE}]
    assert isinstance(net[0], StripeConv2d)


def test_a_checkpoint_state_dict_round_trips():
    buffer = io.BytesIO()
    torch.save(_pruned("1xN").state_dict(), buffer)  # a checkpoint with zeroed weights
    buffer.seek(0)
    model = _net(seed=1)  # other weights, replaced by the checkpoint's
    model.load_state_dict(torch.load(buffer))
    sk.sparsify(model, from_zeros=True)
    _assert_same_outputs(model, _pruned("1xN"))
    again = sk.sparsify(_net(seed=2), sparsity=0.25, n=8)  # another topology, same shapes
    again.load_state_dict(model.state_dict())
    _assert_same_outputs(again, _pruned("1xN"))


def test_a_shared_conv_stays_shared_and_depthwise_stays_dense(caplog):
    model = _pruned("1xN")
    model.add_module("again", model[2])
    model.add_module("dw", nn.Conv2d(16, 16, 3, groups=16).double())
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        sk.sparsify(model, from_zeros=True)
    assert isinstance(model[2], Block1xNConv2d) and model.again is model[2]
    assert type(model.dw) is nn.Conv2d and "dw left dense: depthwise" in caplog.text


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(kind="auto"), ValueError, "example_input: kind='auto'"),
    (dict(kind="auto", example_input=[1.0]), ValueError, "example_input: .*got list"),
    (dict(sparsity=0.5), ValueError, "sparsity: not used with from_zeros=True"),
    (dict(criterion="l1"), ValueError, "criterion: not used with from_zeros=True"),
    (dict(seed=0), ValueError, "seed: not used with from_zeros=True"),
    (dict(example_input=torch.zeros(1)), ValueError, "example_input: only kind='auto'"),
    (dict(from_zeros="yes"), TypeError, "from_zeros: expected a bool"),
    (dict(from_zeros=False, kind="auto"), ValueError, "kind: 'auto' needs from_zeros=True"),
    (dict(kind="auto", n=8, example_input=torch.zeros(1)), TypeError, r"kind='auto'.*\['n'\]"),
    (dict(kind="pattern", num_patterns=8), TypeError, r"\['num_patterns'\] with from_zeros"),
    (dict(n=0), ValueError, "n: "),
    (dict(pad_partial=1), TypeError, "pad_partial: expected a bool"),
    (dict(kind="2x2"), ValueError, "kind: expected one of"),
])
def test_bad_arguments_name_themselves_and_leave_the_model_alone(kwargs, error, message):
    model = _pruned("1xN")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        sk.sparsify(model, **{"from_zeros": True, **kwargs})
    assert all(type(m) in (nn.Conv2d, nn.ReLU) for m in model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
