"""Learned pruning methods: Filter Skeleton (stripe), DPPNet, GSM-SGD."""
import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from sparsekernels.pruning.dppnet import (
    BinaryStep, DPPConv2d, convert_to_dpp, dpp_regularizer, dpp_sparsity,
)
from sparsekernels.pruning.gsm import GSMSGD, gsm_final_prune, masked_gradient
from sparsekernels.pruning.stripe import (
    SkeletonRegularizer, attach_skeletons, fold_skeletons, skeleton_modules, stripe_sparsity,
)


def small_cnn():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.ReLU(),
        nn.Conv2d(6, 6, 1),
        nn.Conv2d(6, 6, 3, padding=1, groups=6),  # depthwise: skipped by default
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 5),
    )


def randomize_skeletons(model, seed=0):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in skeleton_modules(model).values():
            s.skeleton.copy_(torch.rand(s.skeleton.shape, generator=gen) * 2 - 1)


# ---------------------------------------------------------------- stripe

def test_attach_skeletons_parametrizes_weight():
    torch.manual_seed(0)
    model = small_cnn()
    fs = attach_skeletons(model)
    assert sorted(fs) == ["0", "3", "5"]
    assert all(any(p is q for q in model.parameters()) for p in fs.values())
    randomize_skeletons(model)
    conv = model[3]
    original = conv.parametrizations.weight.original
    torch.testing.assert_close(conv.weight, original * fs["3"].unsqueeze(1), rtol=0, atol=0)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(conv(x), F.conv2d(x, original * fs["3"].unsqueeze(1), padding=1))
    with pytest.raises(ValueError, match="layers"):
        attach_skeletons(model, ["3"])
    with pytest.raises(ValueError, match="layers"):
        attach_skeletons(small_cnn(), ["1"])


def test_regularizer_threshold_mode():
    torch.manual_seed(0)
    model = small_cnn()
    attach_skeletons(model)
    randomize_skeletons(model)
    model(torch.randn(2, 3, 6, 6)).square().sum().backward()
    skeletons = skeleton_modules(model)
    before = {n: (s.skeleton.detach().clone(), s.skeleton.grad.clone()) for n, s in skeletons.items()}
    SkeletonRegularizer(model, sr=1e-3, threshold=0.3).apply()
    for name, s in skeletons.items():
        fs, grad = before[name]
        keep = fs.abs() > 0.3
        assert torch.equal(s.keep, keep)
        torch.testing.assert_close(s.skeleton.detach(), fs * keep, rtol=0, atol=0)
        torch.testing.assert_close(s.skeleton.grad, (grad + 1e-3 * fs.sign()) * keep, rtol=0, atol=0)


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_target_mode_zeroes_exact_count(scope):
    torch.manual_seed(0)
    model = small_cnn()
    attach_skeletons(model)
    randomize_skeletons(model)
    skeletons = skeleton_modules(model)
    reg = SkeletonRegularizer(model, sr=0.0, target=0.3, scope=scope)
    # The score is |FS| times the stripe's weight norm (FS starts as all ones).
    fs_before = torch.cat([
        (s.skeleton.detach().abs() * model.get_submodule(name).parametrizations.weight.original
         .detach().norm(dim=1)).flatten()
        for name, s in skeletons.items()])
    reg.apply()
    total = sum(s.keep.numel() for s in skeletons.values())
    if scope == "global":
        assert sum(int((~s.keep).sum()) for s in skeletons.values()) == round(total * 0.3)
        # the pruned ones are the globally smallest scores
        pruned = torch.cat([~s.keep.flatten() for s in skeletons.values()])
        assert fs_before[pruned].max() <= fs_before[~pruned].min()
    else:
        for s in skeletons.values():
            assert int((~s.keep).sum()) == round(s.keep.numel() * 0.3)
    assert stripe_sparsity(model) == pytest.approx(
        sum(int((~s.keep).sum()) for s in skeletons.values()) / total)
    pruned_before = [~s.keep.clone() for s in skeletons.values()]
    # a schedule raises the level: old stripes stay pruned, the count follows
    with torch.no_grad():
        for s in skeletons.values():  # make the pruned ones look important
            s.skeleton.add_(5.0)
    reg.set_level(0.6)
    reg.apply()
    for s, old in zip(skeletons.values(), pruned_before):
        assert not s.keep[old].any()
        assert torch.all(s.skeleton.detach()[~s.keep] == 0)
    if scope == "global":
        assert sum(int((~s.keep).sum()) for s in skeletons.values()) == round(total * 0.6)
    else:
        for s in skeletons.values():
            assert int((~s.keep).sum()) == round(s.keep.numel() * 0.6)
    # a lower level revives nothing
    pruned_at_high_level = [~s.keep.clone() for s in skeletons.values()]
    reg.set_level(0.1)
    reg.apply()
    assert all(torch.equal(~s.keep, old) for s, old in zip(skeletons.values(), pruned_at_high_level))
    with pytest.raises(ValueError, match="level"):
        reg.set_level(1.5)
    with pytest.raises(ValueError, match="scope"):
        SkeletonRegularizer(model, scope="model")


def test_pruned_stripes_survive_momentum_and_fold():
    torch.manual_seed(0)
    model = small_cnn()
    attach_skeletons(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=1e-4)
    reg = SkeletonRegularizer(model, sr=1e-2, target=0.4)
    x = torch.randn(4, 3, 6, 6)
    for _ in range(3):
        opt.zero_grad()
        model(x).square().mean().backward()
        reg.apply()
        opt.step()
    # momentum left residue in zeroed FS entries, but the forward never sees it
    expected = stripe_sparsity(model)
    total = 4 * 9 + 6 * 9 + 6  # stripes of convs 0, 3, 5
    assert expected == round(total * 0.4) / total
    model.eval()
    y_skeleton = model(x)
    params_before = {id(p) for p in model.parameters()}
    masks = fold_skeletons(model)
    assert sorted(masks) == ["0", "3", "5"]
    for name, mask in masks.items():
        conv = model.get_submodule(name)
        assert type(conv) is nn.Conv2d and not parametrize.is_parametrized(conv)
        assert type(conv.weight) is nn.Parameter and id(conv.weight) in params_before
        assert mask.shape == (conv.out_channels, *conv.kernel_size) and mask.dtype == torch.bool
        assert torch.equal(conv.weight.ne(0).any(dim=1), mask)
        assert not conv.weight.permute(0, 2, 3, 1)[~mask].any()
    torch.testing.assert_close(model(x), y_skeleton, rtol=1e-6, atol=1e-6)
    assert stripe_sparsity(model, masks) == pytest.approx(expected)
    # per layer, the zero-stripe fraction is the zero-weight fraction (layers
    # with different Cin weigh stripes differently, so not over the model)
    for name, mask in masks.items():
        weight = model.get_submodule(name).weight
        assert stripe_sparsity(model, [name]) == pytest.approx(float((weight == 0).double().mean()))
    with pytest.raises(ValueError, match="layers"):
        stripe_sparsity(model)


# ---------------------------------------------------------------- DPPNet

def per_sample_reference(layer, x):
    """The original's computation: per-sample kernels sum_p a M_p W_p."""
    masks = layer.pattern_masks()
    attn = layer.attention(x)
    kernels = torch.einsum("bpo,pochw->bochw", attn, layer.weight * masks[:, None, None])
    out = [F.conv2d(x[b:b + 1], kernels[b], layer.bias, layer.stride, layer.padding, layer.dilation)
           for b in range(x.shape[0])]
    return torch.cat(out)


def dpp_layer(**kwargs):
    torch.manual_seed(0)
    layer = DPPConv2d(5, 6, 3, **kwargs).double()
    with torch.no_grad():  # distinct patterns: pattern p loses more positions
        mean_abs = layer.weight.abs().mean(dim=(1, 2))  # [P, 3, 3]
        for p in range(layer.num_patterns):
            layer.threshold[p] = mean_abs[p].flatten().sort().values[2 * p] + 1e-6
    return layer


@pytest.mark.parametrize("kwargs", [dict(padding=1), dict(stride=2, padding=2, dilation=2, bias=True)])
def test_dpp_output_equals_per_sample_kernels(kwargs):
    layer = dpp_layer(**kwargs)
    masks = layer.pattern_masks()
    assert len({tuple(m.flatten().tolist()) for m in masks}) == layer.num_patterns
    x = torch.randn(3, 5, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(layer(x), per_sample_reference(layer, x), rtol=1e-12, atol=1e-12)


def test_binary_step_straight_through_gradient():
    x = torch.tensor([-1.5, -1.0, -0.7, -0.4, -0.2, 0.0, 0.1, 0.4, 0.41, 1.0, 1.01], requires_grad=True)
    y = BinaryStep.apply(x)
    assert y.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1]
    y.backward(torch.full_like(x, 2.0))
    expected = [0, 0.4, 0.4, 0.4, 1.2, 2.0, 1.6, 0.4, 0.4, 0.4, 0]
    torch.testing.assert_close(x.grad, 2.0 * torch.tensor(expected))


def test_dpp_gradcheck_and_threshold_gradient():
    layer = dpp_layer(padding=1, bias=True)
    x = torch.randn(2, 5, 4, 4, dtype=torch.float64, requires_grad=True)
    names = ["attention.reduce.weight", "attention.expand.bias", "bias"]
    params = {n: p.detach().clone().requires_grad_() for n, p in layer.named_parameters() if n in names}

    def run(x, *values):
        return torch.func.functional_call(layer, dict(zip(names, values)), (x,))

    # the mask's step has no numerical derivative, so W and th are checked through the STE below
    assert torch.autograd.gradcheck(run, (x, *(params[n] for n in names)), fast_mode=True)
    layer(x).square().sum().backward()
    assert layer.threshold.grad.abs().sum() > 0  # thresholds learn through the STE


def test_dpp_regularizer_value():
    layer = dpp_layer()
    model = nn.Sequential(layer, nn.ReLU(), DPPConv2d(6, 2, 3).double())
    expected = 1e-3 * (torch.exp(-layer.threshold).sum() + model[2].threshold.numel())
    torch.testing.assert_close(dpp_regularizer(model, alpha=1e-3), expected)
    with pytest.raises(ValueError, match="DPPConv2d"):
        dpp_regularizer(nn.Sequential(nn.Conv2d(1, 1, 3)))


def test_dpp_static_support_and_export():
    layer = dpp_layer(padding=1, bias=True)
    masks = layer.pattern_masks().bool()
    mean_abs = layer.weight.abs().mean(dim=(1, 2))
    assert torch.equal(masks, mean_abs > layer.threshold.mean(dim=1).view(-1, 1, 1))
    support = layer.static_support()
    assert torch.equal(support, masks.any(dim=0)) and support.shape == (3, 3)
    with torch.no_grad():
        layer.weight[:, :, :, 0, 0] = 0.0  # corner off in every pattern
    support = layer.static_support()
    assert not support[0, 0] and support.sum() < 9
    exported = layer.export()
    assert torch.equal(exported.support, support)
    assert torch.equal(exported.masks, layer.pattern_masks().bool())
    assert exported.positions.tolist() == support.flatten().nonzero().flatten().tolist()
    assert not exported.kernels[..., ~support].any()
    x = torch.randn(2, 5, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(exported.reference(x), layer(x).detach())
    # sparsity over two layers of 9 positions each
    model = nn.Sequential(layer, DPPConv2d(6, 3, 3).double())
    assert dpp_sparsity(model) == pytest.approx(int((~support).sum()) / 18)


def test_dpp_from_conv_starts_dense():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 5, 3, stride=2, padding=1, bias=True)
    layer = DPPConv2d.from_conv(conv, seed=3)
    assert layer.static_support().all() and layer.pattern_masks().all()
    assert not torch.equal(layer.weight[0], layer.weight[1])
    torch.testing.assert_close(layer.weight, conv.weight.detach().expand_as(layer.weight), rtol=0, atol=1e-2)
    torch.testing.assert_close(DPPConv2d.from_conv(conv, seed=3).weight, layer.weight, rtol=0, atol=0)
    x = torch.randn(2, 4, 7, 7)
    torch.testing.assert_close(layer(x), conv(x), rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="groups"):
        DPPConv2d.from_conv(nn.Conv2d(4, 4, 3, groups=2))


def test_convert_to_dpp_keeps_stem_downsample_fc_dense():
    torch.manual_seed(0)
    model = nn.Sequential()
    model.stem = nn.Conv2d(3, 4, 3, padding=1)
    model.conv1 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
    model.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
    model.down = nn.Conv2d(4, 8, 1, stride=2, bias=False)
    model.fc = nn.Linear(8, 2)
    converted = convert_to_dpp(model)
    assert converted == ["conv1", "conv2"]
    assert type(model.stem) is nn.Conv2d and type(model.down) is nn.Conv2d
    assert isinstance(model.conv1, DPPConv2d) and model.conv1.stride == (2, 2)
    assert dpp_sparsity(model) == 0.0
    assert convert_to_dpp(model, ["stem"]) == ["stem"] and isinstance(model.stem, DPPConv2d)
    with pytest.raises(ValueError, match="layers"):
        convert_to_dpp(model, ["fc"])


# ---------------------------------------------------------------- GSM-SGD

def gsm_model():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(12, 4),
    )


def train(model, opt, steps, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 2, 5, 5, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("nesterov", [False, True])
def test_gsm_ratio_one_is_sgd(nesterov):
    ours, ref = gsm_model(), gsm_model()
    train(ours, GSMSGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=nesterov,
                       nonzero_ratio=1.0, weight_decay_bias=1e-2), 5)
    train(ref, torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2,
                               nesterov=nesterov, foreach=False), 5)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gsm_small_ratio_matches_hand_computation():
    gen = torch.Generator().manual_seed(1)
    w1 = torch.randn(3, 4, generator=gen).requires_grad_()
    w2 = torch.randn(2, 2, 1, 1, generator=gen).requires_grad_()
    lr, mu, wd, ratio = 0.1, 0.9, 0.05, 0.25
    opt = GSMSGD([w1, w2], lr=lr, momentum=mu, weight_decay=wd, nonzero_ratio=ratio)
    w = torch.cat([w1.detach().flatten(), w2.detach().flatten()])
    buf = None
    for _ in range(4):
        g = torch.randn(16, generator=gen)
        w1.grad, w2.grad = g[:12].view(3, 4).clone(), g[12:].view(2, 2, 1, 1).clone()
        keep = torch.zeros(16, dtype=torch.bool)
        keep[(w * g).abs().topk(round(ratio * 16)).indices] = True
        d = torch.where(keep, g, 0.0) + wd * w
        buf = d if buf is None else mu * buf + d
        w = w - lr * buf
        opt.step()
        # non-selected weights got weight decay only
        torch.testing.assert_close(torch.cat([w1.detach().flatten(), w2.detach().flatten()]), w)


def test_gsm_selection_is_global_across_layers():
    big = torch.full((4, 4), 3.0, requires_grad=True)
    small = torch.full((2, 2, 1, 1), 0.1, requires_grad=True)
    big.grad, small.grad = torch.ones(4, 4), torch.ones(2, 2, 1, 1)
    opt = GSMSGD([{"params": [big]}, {"params": [small], "lr": 0.5}], lr=0.1, nonzero_ratio=0.5)
    masks = opt.gradient_masks()
    assert int(masks[id(big)].sum()) == 10 and not masks[id(small)].any()
    # ties at the cut are broken by position: exactly 10, the last 10
    assert masks[id(big)].flatten().tolist() == [False] * 6 + [True] * 10
    opt.param_groups[1]["nonzero_ratio"] = 0.2
    with pytest.raises(ValueError, match="nonzero_ratio"):
        opt.step()


def test_gsm_non_prunable_and_opt_out_groups_are_plain_sgd():
    ours, ref = gsm_model(), gsm_model()
    prunable = lambda m: [p for p in m.parameters() if p.dim() in (2, 4)]
    others = lambda m: [p for p in m.parameters() if p.dim() not in (2, 4)]
    opt = GSMSGD([{"params": prunable(ours)}, {"params": others(ours)}], lr=0.1, momentum=0.9,
                 weight_decay=1e-2, nonzero_ratio=0.1, weight_decay_bias=1e-3)
    train(ours, opt, 1)
    # BN and bias: plain SGD with weight_decay_bias, on the same gradients
    gsm_ref = copy.deepcopy(ref)
    sgd = torch.optim.SGD(others(ref), lr=0.1, momentum=0.9, weight_decay=1e-3, foreach=False)
    train(ref, sgd, 1)
    for a, b in zip(others(ours), others(ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # gsm=False: the prunable weights are SGD too
    opt_out = GSMSGD([{"params": prunable(gsm_ref), "gsm": False}], lr=0.1, momentum=0.9, weight_decay=1e-2)
    sgd_ref = gsm_model()
    train(gsm_ref, opt_out, 2)
    train(sgd_ref, torch.optim.SGD(prunable(sgd_ref), lr=0.1, momentum=0.9, weight_decay=1e-2, foreach=False), 2)
    for a, b in zip(prunable(gsm_ref), prunable(sgd_ref)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gsm_state_dict_resumes_exactly():
    straight = gsm_model()
    train(straight, GSMSGD(straight.parameters(), lr=0.05, nonzero_ratio=0.2), 6)
    first = gsm_model()
    opt = GSMSGD(first.parameters(), lr=0.05, nonzero_ratio=0.2)
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 2, 5, 5, generator=gen) for _ in range(6)]
    for x in batches[:3]:
        opt.zero_grad()
        first(x).square().mean().backward()
        opt.step()
    checkpoint = copy.deepcopy({"model": first.state_dict(), "opt": opt.state_dict()})
    resumed = gsm_model()
    resumed.load_state_dict(checkpoint["model"])
    opt2 = GSMSGD(resumed.parameters(), lr=1.0, nonzero_ratio=0.9)
    opt2.load_state_dict(checkpoint["opt"])
    for x in batches[3:]:
        opt2.zero_grad()
        resumed(x).square().mean().backward()
        opt2.step()
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gsm_final_prune_exact_count_and_masked_gradient():
    model = gsm_model()
    with torch.no_grad():
        model[0].weight[0] = 0.5  # a block of ties
    prunable = {n: p.detach().clone() for n, p in model.named_parameters() if p.dim() in (2, 4)}
    total = sum(p.numel() for p in prunable.values())
    masks = gsm_final_prune(model, nonzero_ratio=0.3)
    assert sorted(masks) == sorted(prunable)
    assert sum(int(m.sum()) for m in masks.values()) == round(0.3 * total)
    kept = torch.cat([prunable[n].abs().flatten()[masks[n].flatten()] for n in masks])
    dropped = torch.cat([prunable[n].abs().flatten()[~masks[n].flatten()] for n in masks])
    assert kept.min() >= dropped.max()
    for name, mask in masks.items():
        param = model.get_parameter(name)
        torch.testing.assert_close(param.detach(), prunable[name] * mask, rtol=0, atol=0)
    assert model[1].weight.count_nonzero() == 3  # BN untouched
    handles = masked_gradient(model, masks)
    model(torch.randn(2, 2, 5, 5)).sum().backward()
    for name, mask in masks.items():
        assert not model.get_parameter(name).grad[~mask].any()
    for h in handles:
        h.remove()
    by_position = gsm_final_prune([torch.ones(4, 4), torch.ones(4)], nonzero_ratio=0.5)
    assert list(by_position) == [0] and int(by_position[0].sum()) == 8
    with pytest.raises(ValueError, match="nonzero_ratio"):
        GSMSGD(model.parameters(), lr=0.1, nonzero_ratio=1.5)


def test_gsm_final_prune_bounds_and_ties():
    weights = [torch.tensor([[1.0, 2.0]]), torch.tensor([[[[2.0]]], [[[0.5]]]])]
    masks = gsm_final_prune([w.clone() for w in weights], nonzero_ratio=0.0)
    assert not any(m.any() for m in masks.values())
    masks = gsm_final_prune([w.clone() for w in weights], nonzero_ratio=0.5)
    assert masks[0].tolist() == [[False, True]] and masks[1].flatten().tolist() == [True, False]
    masks = gsm_final_prune([w.clone() for w in weights], nonzero_ratio=1.0)
    assert all(m.all() for m in masks.values())
    masks = gsm_final_prune([torch.ones(2, 2)], nonzero_ratio=0.75)  # all tied: exactly 3 kept
    assert int(masks[0].sum()) == 3


def test_dpp_flops_count_the_p_static_convs_and_the_mix():
    from sparsekernels.flops import count_flops

    torch.manual_seed(0)
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
    dpp = DPPConv2d.from_conv(conv, num_patterns=4)
    ho_wo = 6 * 6
    attention = count_flops(dpp.attention, (8, 6, 6))
    expected = 2 * (4 * 16 * 8 * 9 + 4 * 16) * ho_wo
    assert count_flops(dpp, (8, 6, 6), count_zeros=True) == expected + attention
    with torch.no_grad():
        dpp.threshold.fill_(1e3)  # every position pruned: only the mix and attention remain
    assert count_flops(dpp, (8, 6, 6)) == 2 * 4 * 16 * ho_wo + attention
