"""Mask-based pruners (1xN, pattern, magnitude) and the sparsity schedules."""
import copy
import io
import logging
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import parametrize

from sparsekernels import Block1xN
from sparsekernels.pruning.base import pruned_count
from sparsekernels.pruning.block1xn import Block1xNSparsifier, block1xn_config
from sparsekernels.pruning.magnitude import MagnitudeSparsifier, magnitude_config
from sparsekernels.pruning.pattern import PatternSparsifier, assign_patterns, pattern_config
from sparsekernels.pruning.schedule import ScheduledPruning, SparsitySchedule


class Net(nn.Module):
    """Stem, a bias-less 3x3, a depthwise, a 1x1 with Cout=12, a grouped 3x3
    and a classifier with 10 outputs (not a multiple of 4 or 8)."""

    def __init__(self, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16, bias=False)
        self.pw = nn.Conv2d(16, 12, 1, bias=False)
        self.grouped = nn.Conv2d(12, 24, 3, padding=1, groups=2, bias=False)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        for conv in (self.stem, self.conv, self.dw, self.pw, self.grouped):
            x = torch.relu(conv(x))
        return self.fc(x.mean((2, 3)))


def _fqns(config):
    return [entry["tensor_fqn"] for entry in config]


def _masks(sparsifier):
    return {
        g["tensor_fqn"]: next(iter(g["module"].parametrizations.weight)).mask.bool().clone()
        for g in sparsifier.groups
    }


def _conv_shaped(t):
    return t if t.dim() == 4 else t[..., None, None]


def _prune(sparsifier, model, config):
    sparsifier.prepare(model, config)
    sparsifier.step()
    masks = _masks(sparsifier)
    sparsifier.squash_mask()
    return masks


# ---- layer selection ----------------------------------------------------------

def test_block_config_skips_stem_depthwise_and_classifier(caplog):
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        config = block1xn_config(Net(), n=4, sparsity=0.5)
    assert _fqns(config) == ["conv.weight", "pw.weight", "grouped.weight"]
    assert all(e["n"] == 4 and e["sparsity_level"] == 0.5 for e in config)
    log = caplog.text
    assert "stem left dense: the stem" in log and "dw left dense: depthwise" in log
    assert "fc left dense: the classifier (prune_classifier=False)" in log


def test_config_options_and_per_layer_targets(caplog):
    full = block1xn_config(Net(), n=4, sparsity=0.5, prune_classifier=True, prune_stem=True)
    assert _fqns(full) == ["stem.weight", "conv.weight", "pw.weight", "grouped.weight", "fc.weight"]
    with caplog.at_level(logging.INFO, logger="sparsekernels"):
        mapped = pattern_config(Net(), {"conv": 0.3, "g*": 0.7}, exclude=["grouped"])
    assert [(e["tensor_fqn"], e["sparsity_level"]) for e in mapped] == [("conv.weight", 0.3)]
    assert "pw left dense: no sparsity level matches" in caplog.text
    assert "grouped left dense: excluded by the caller" in caplog.text
    assert _fqns(magnitude_config(Net(), 0.5)) == [
        "stem.weight", "conv.weight", "dw.weight", "pw.weight", "grouped.weight"]
    assert _fqns(magnitude_config(Net(), 0.5, include_linear=True))[-1] == "fc.weight"


@pytest.mark.parametrize("bad", [1.0, -0.1, "0.5", {"conv": 1.5}])
def test_config_rejects_bad_sparsity(bad):
    with pytest.raises(ValueError, match="sparsity"):
        block1xn_config(Net(), n=4, sparsity=bad)


# ---- 1xN ------------------------------------------------------------------------

@pytest.mark.parametrize("n", [4, 8])
@pytest.mark.parametrize("criterion", ["l1", "random"])
@pytest.mark.parametrize("level", [0.3, 0.5])
def test_block_masks_are_exact_and_true_1xn(n, criterion, level):
    model = Net()
    config = block1xn_config(model, n=n, sparsity=level, prune_classifier=True)
    sparsifier = Block1xNSparsifier(n, criterion=criterion, pad_partial=True, seed=7)
    masks = _prune(sparsifier, model, config)
    for fqn, mask in masks.items():
        module = model.get_submodule(fqn.rsplit(".", 1)[0])
        groups = getattr(module, "groups", 1)
        weight = _conv_shaped(module.weight.detach())
        block = Block1xN.from_mask(weight, _conv_shaped(mask), n, groups)  # rejects non-1xN
        assert block.num_blocks - block.nnzb == pruned_count(block.num_blocks, level)
        # after squash_mask the weight's zeros are exactly the mask's
        assert torch.equal(weight != 0, _conv_shaped(mask))
    assert (model.pw.weight.shape[0] % n != 0) == (n == 8)  # a padded layer was covered


def test_block_rejects_partial_rows_without_pad_partial():
    model = Net()
    config = block1xn_config(model, n=8, sparsity=0.5)
    with pytest.raises(ValueError, match=r"pw\.weight: out_channels/groups=12 is not a multiple of n=8"):
        Block1xNSparsifier(8).prepare(model, config)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())


def test_block_random_is_seeded_and_independent_per_layer():
    twins = nn.Sequential(nn.Conv2d(8, 16, 3, bias=False), nn.Conv2d(8, 16, 3, bias=False))
    config = [{"tensor_fqn": f"{i}.weight", "sparsity_level": 0.5} for i in (0, 1)]

    def masks(seed):
        s = Block1xNSparsifier(4, criterion="random", seed=seed)
        s.prepare(copy.deepcopy(twins), config)
        s.step()
        return _masks(s)

    a, b, c = masks(3), masks(3), masks(4)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    assert not torch.equal(a["0.weight"], a["1.weight"])  # same shape, own stream
    assert int((~a["0.weight"]).sum()) == 16 * 8 * 9 // 2  # without replacement: exact


def test_block_l1_on_linear_prunes_smallest_blocks():
    fc = nn.Sequential(nn.Linear(4, 8, bias=False))
    with torch.no_grad():
        fc[0].weight.fill_(1.0)
        fc[0].weight[0:4, 2] = 0.01
    s = Block1xNSparsifier(4)
    masks = _prune(s, fc, [{"tensor_fqn": "0.weight", "sparsity_level": 1 / 8}])
    assert not masks["0.weight"][0:4, 2].any() and int(masks["0.weight"].sum()) == 28


def test_prepare_step_squash_gives_plain_masked_parameters():
    model = Net()
    dense = copy.deepcopy(model)
    originals = {name: p for name, p in model.named_parameters()}
    masks = _prune(Block1xNSparsifier(4), model, block1xn_config(model, n=4, sparsity=0.5))
    for name, param in model.named_parameters():
        assert type(param) is nn.Parameter and param is originals[name]
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    with torch.no_grad():
        for fqn, mask in masks.items():
            dense.get_submodule(fqn.rsplit(".", 1)[0]).weight.mul_(mask)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(model(x), dense(x), rtol=0, atol=0)
    for name in ("stem", "dw", "fc"):  # not asked for: untouched
        assert torch.equal(getattr(model, name).weight, getattr(Net(), name).weight)


# ---- pattern ----------------------------------------------------------------------

def _check_pattern_layer(weight, keep, library, pattern_id, level, num_patterns, entries=4):
    cout, cin_g, kh, kw = weight.shape
    area, kernels = kh * kw, cout * cin_g
    kept = min(entries, area)
    assert library.shape[0] <= num_patterns and (library.flatten(1).sum(1) == kept).all()
    if kept < area:
        assert library[:, kh // 2, kw // 2].all()  # the centre is in every pattern
    ids = pattern_id.flatten()
    kernels_keep = keep.reshape(kernels, kh, kw)
    assert torch.equal(kernels_keep[ids >= 0], library[ids[ids >= 0]])
    assert not kernels_keep[ids < 0].any()
    # dropped kernels = round((round(numel*level) - pattern zeros) / kept), halves up
    zeros = math.floor(weight.numel() * level + 0.5) - kernels * (area - kept)
    expected = min(kernels, max(0, math.floor(zeros / kept + 0.5)))
    assert int((ids < 0).sum()) == expected
    assert int((~keep).sum()) == kernels * (area - kept) + expected * kept


@pytest.mark.parametrize("level", [0.2, 5 / 9, 0.8, 0.95])
def test_pattern_structure_and_exact_dropped_kernels(level):
    model = Net()
    config = pattern_config(model, level, prune_classifier=True)
    s = PatternSparsifier(num_patterns=4)
    masks = _prune(s, model, config)
    for fqn, mask in masks.items():
        module = model.get_submodule(fqn.rsplit(".", 1)[0])
        state = s.state[fqn]
        _check_pattern_layer(_conv_shaped(module.weight), _conv_shaped(mask), state["pattern_library"],
                             state["pattern_id"], level, 4)
        assert torch.equal(module.weight != 0, mask)
    # 1x1 and Linear: connectivity only, exact zero count
    assert int((~masks["pw.weight"]).sum()) == pruned_count(12 * 16, level)
    assert int((~masks["fc.weight"]).sum()) == pruned_count(240, level)


def test_pattern_library_recovers_dominant_patterns():
    g = torch.Generator().manual_seed(0)
    a = torch.tensor([[0, 1, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.bool)
    b = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 1, 1]], dtype=torch.bool)
    which = torch.rand(32, 16, generator=g) < 0.5
    support = torch.where(which[..., None, None], a, b)
    noise = 0.01 * torch.randn(32, 16, 3, 3, generator=g)
    weight = support * (1 + torch.rand(32, 16, 3, 3, generator=g)) + noise
    keep, library, pattern_id = assign_patterns(weight, 5 / 9, num_patterns=2)
    assert {tuple(p.flatten().tolist()) for p in library} == {tuple(p.flatten().tolist()) for p in (a, b)}
    assert torch.equal(keep, support)
    # connectivity drops the kernels with the least remaining energy
    _, _, pattern_id = assign_patterns(weight, 0.8, num_patterns=2)
    remaining = (weight * support).flatten(2).norm(dim=2)
    dropped = pattern_id < 0
    assert dropped.any() and remaining[dropped].max() <= remaining[~dropped].min()


def test_pattern_level_zero_is_dense_and_even_kernels_need_no_centre():
    keep, library, pattern_id = assign_patterns(torch.randn(4, 2, 3, 3), 0.0)
    assert keep.all() and library.shape == (1, 3, 3) and (pattern_id == 0).all()
    even = nn.Sequential(nn.Conv2d(2, 4, 2))
    config = [{"tensor_fqn": "0.weight", "sparsity_level": 0.5}]
    with pytest.raises(ValueError, match=r"0\.weight: require_center needs odd kernel sizes, got 2x2"):
        PatternSparsifier(entries=2).prepare(copy.deepcopy(even), config)
    masks = _prune(PatternSparsifier(entries=2, require_center=False), even, config)
    assert int((~masks["0.weight"]).sum()) == 16  # 2 of 4 per kernel = the level exactly


# ---- magnitude ----------------------------------------------------------------------

@pytest.mark.parametrize("level", [0.3, 0.77])
def test_global_magnitude_exact_count_and_one_threshold(level):
    model = Net()
    config = magnitude_config(model, level)
    masks = _prune(MagnitudeSparsifier(scope="global"), model, config)
    weights = [model.get_submodule(fqn.rsplit(".", 1)[0]).weight.detach() for fqn in masks]
    total = sum(w.numel() for w in weights)
    kept = torch.cat([w.flatten() for w in weights])
    keep = torch.cat([m.flatten() for m in masks.values()])
    assert int((~keep).sum()) == int((kept == 0).sum()) == pruned_count(total, level)
    dense = Net()
    original = torch.cat([dense.get_submodule(f.rsplit(".", 1)[0]).weight.detach().flatten() for f in masks])
    assert original[~keep].abs().max() <= original[keep].abs().min()
    per_layer = [float((~m).float().mean()) for m in masks.values()]
    assert max(per_layer) - min(per_layer) > 0.05  # the ratios really are global


def test_magnitude_ties_are_deterministic_and_layer_scope_is_per_tensor():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, bias=False), nn.Conv2d(4, 4, 3, bias=False))
    with torch.no_grad():
        for conv in model:
            conv.weight.copy_(torch.randint(-2, 3, conv.weight.shape))  # many equal |w|
    config = magnitude_config(model, 0.6)
    a = _prune(MagnitudeSparsifier(), copy.deepcopy(model), config)
    b = _prune(MagnitudeSparsifier(), copy.deepcopy(model), config)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert sum(int((~m).sum()) for m in a.values()) == pruned_count(288, 0.6)
    one_level = torch.cat([model[0].weight.abs().flatten(), model[1].weight.abs().flatten()])
    at_threshold = one_level == one_level.sort().values[pruned_count(288, 0.6) - 1]
    pruned = ~torch.cat([m.flatten() for m in a.values()])
    assert pruned[at_threshold].long().diff().le(0).all()  # ties pruned in position order
    per_layer = [{"tensor_fqn": "0.weight", "sparsity_level": 0.25},
                 {"tensor_fqn": "1.weight", "sparsity_level": 0.5}]
    layer = _prune(MagnitudeSparsifier(scope="layer"), copy.deepcopy(model), per_layer)
    assert [int((~m).sum()) for m in layer.values()] == [36, 72]
    mixed = MagnitudeSparsifier()
    mixed.prepare(copy.deepcopy(model), per_layer)
    with pytest.raises(ValueError, match="scope='global' ranks all tensors against one level"):
        mixed.step()


# ---- state_dict ---------------------------------------------------------------------

def _sparsifiers():
    return [
        (lambda: Block1xNSparsifier(4, criterion="random", pad_partial=True),
         lambda m: block1xn_config(m, n=4, sparsity=0.5, prune_classifier=True)),
        (lambda: PatternSparsifier(num_patterns=3), lambda m: pattern_config(m, 0.7)),
        (lambda: MagnitudeSparsifier(), lambda m: magnitude_config(m, 0.6)),
    ]


def _through_file(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # what training checkpoints use


@pytest.mark.parametrize("make,config", _sparsifiers())
def test_state_dict_round_trip_loads_weights_only(make, config):
    model, sparsifier = Net(), make()
    sparsifier.prepare(model, config(model))
    sparsifier.step()
    expected = _masks(sparsifier)
    state = _through_file(sparsifier.state_dict())
    for seed in (1, 2):  # a checkpoint saved after a resume must keep the masks too
        fresh_model, fresh = Net(seed=seed), make()
        fresh.prepare(fresh_model, config(fresh_model))
        fresh.load_state_dict(state)
        assert all("mask" in s for s in state["state"].values())  # caller's dict intact
        assert _masks(fresh).keys() == expected.keys()
        assert all(torch.equal(_masks(fresh)[k], m) for k, m in expected.items())
        state = _through_file(fresh.state_dict())
    for fqn, s in sparsifier.state.items():
        for key in ("pattern_library", "pattern_id"):
            if key in s:
                assert torch.equal(fresh.state[fqn][key], s[key])


# ---- schedule -------------------------------------------------------------------------

def test_schedule_formulas():
    lin = SparsitySchedule(init_sparsity=0.1, final_sparsity=0.9, start_epoch=2, end_epoch=10,
                           inter_func="linear")
    cub = SparsitySchedule(init_sparsity=0.1, final_sparsity=0.9, start_epoch=2, end_epoch=10,
                           update_frequency=2, inter_func="cubic")
    for epoch in (2, 3, 6, 9.5):
        p = (math.floor(epoch) - 2) / 8
        assert lin.level(epoch) == pytest.approx(0.1 + 0.8 * p)
        q = (2 * math.floor((epoch - 2) / 2)) / 8
        assert cub.level(epoch) == pytest.approx(0.9 - 0.8 * (1 - q) ** 3)
    assert lin.level(1.99) == cub.level(0) == 0.0
    assert lin.level(10) == cub.level(10) == cub.level(50) == 0.9  # exact
    assert cub.level(3) == cub.level(2) == 0.1  # held between updates
    one = SparsitySchedule(final_sparsity=0.5, start_epoch=3, inter_func="one_shot", end_epoch=3)
    assert [one.level(e) for e in (0, 2.9, 3, 7)] == [0.0, 0.0, 0.5, 0.5]


@pytest.mark.parametrize("kwargs,field", [
    (dict(final_sparsity=1.0), "final_sparsity"),
    (dict(final_sparsity=0.5, init_sparsity=-0.1), "init_sparsity"),
    (dict(final_sparsity=0.5, init_sparsity=0.6), "init_sparsity"),
    (dict(final_sparsity=0.5, start_epoch=3, end_epoch=2), "end_epoch"),
    (dict(final_sparsity=0.5, update_frequency=0), "update_frequency"),
    (dict(final_sparsity=0.5, inter_func="exp"), "inter_func"),
    (dict(final_sparsity=0.5, init_sparsity=0.1, inter_func="one_shot"), "init_sparsity"),
])
def test_schedule_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        SparsitySchedule(**kwargs)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    init=st.floats(0, 0.95), span=st.floats(0, 0.99), start=st.integers(0, 5),
    length=st.integers(0, 20), freq=st.sampled_from([0.5, 1, 2, 3]),
    func=st.sampled_from(["linear", "cubic", "one_shot"]),
    epochs=st.lists(st.floats(0, 40, allow_nan=False), min_size=2, max_size=20),
)
def test_schedule_property(init, span, start, length, freq, func, epochs):
    init = 0.0 if func == "one_shot" else init
    final = min(init + span, 0.99)
    s = SparsitySchedule(init_sparsity=init, final_sparsity=final, start_epoch=start,
                         end_epoch=start + length, update_frequency=freq, inter_func=func)
    levels = [s.level(e) for e in sorted(epochs)]
    assert all(a <= b + 1e-12 for a, b in zip(levels, levels[1:]))
    assert all(l == 0.0 or init - 1e-12 <= l <= final for l in levels)
    assert s.level(start + length) == s.level(start + length + 1.5) == final


def test_scheduled_pruning_drives_per_layer_targets():
    model = Net()
    targets = {"conv": 0.5, "pw": 0.25, "grouped": 0.75}
    sparsifier = Block1xNSparsifier(4)
    sparsifier.prepare(model, block1xn_config(model, n=4, sparsity=targets))
    schedule = SparsitySchedule(final_sparsity=0.5, start_epoch=1, end_epoch=4, inter_func="cubic")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scheduler = ScheduledPruning(sparsifier, schedule)
        previous = None
        for epoch in range(7):
            scheduler.step(epoch)
            changed = sparsifier.enable_mask_update
            sparsifier.step()
            fraction = schedule.level(epoch) / 0.5
            for group in sparsifier.groups:
                name = group["tensor_fqn"].split(".")[0]
                assert group["sparsity_level"] == targets[name] * fraction
                assert group["target_level"] == targets[name]
            masks = _masks(sparsifier)
            if previous is not None:
                assert changed == (schedule.level(epoch) != schedule.level(epoch - 1))
                assert all((masks[k] <= previous[k]).all() for k in masks)  # pruned stays pruned
            previous = masks
    for group in sparsifier.groups:  # exact per-layer targets at the end
        fqn = group["tensor_fqn"]
        module = model.get_submodule(fqn.split(".")[0])
        block = Block1xN.from_mask(module.weight.detach(), previous[fqn], 4, module.groups)
        target = targets[fqn.split(".")[0]]
        assert block.num_blocks - block.nnzb == pruned_count(block.num_blocks, target)
    resumed = ScheduledPruning(sparsifier, schedule)
    resumed.load_state_dict(_through_file(scheduler.state_dict()))
    assert resumed.last_epoch == 6 and resumed.get_last_sl() == scheduler.get_last_sl()


def test_scheduled_global_magnitude_reaches_exact_count():
    model = Net()
    sparsifier = MagnitudeSparsifier()
    config = magnitude_config(model, 0.8)
    sparsifier.prepare(model, config)
    scheduler = ScheduledPruning(sparsifier, SparsitySchedule(
        init_sparsity=0.2, final_sparsity=0.8, end_epoch=3, inter_func="linear"))
    for epoch in range(5):
        scheduler.step(epoch)
        sparsifier.step()
    masks = _masks(sparsifier)
    total = sum(m.numel() for m in masks.values())
    assert sum(int((~m).sum()) for m in masks.values()) == pruned_count(total, 0.8)


def test_resume_mid_schedule_matches_an_uninterrupted_run():
    schedule = SparsitySchedule(final_sparsity=0.6, end_epoch=5, inter_func="linear")

    def start():
        model, sparsifier = Net(), PatternSparsifier()
        sparsifier.prepare(model, pattern_config(model, {"conv": 0.6, "*": 0.3}))
        return sparsifier, ScheduledPruning(sparsifier, schedule)

    def run(sparsifier, scheduler, epochs):
        for epoch in epochs:
            scheduler.step(epoch)
            sparsifier.step()

    whole, whole_scheduler = start()
    run(whole, whole_scheduler, range(7))
    first, first_scheduler = start()
    run(first, first_scheduler, range(3))
    saved = _through_file({"sparsifier": first.state_dict(), "scheduler": first_scheduler.state_dict()})
    resumed, resumed_scheduler = start()
    resumed.load_state_dict(saved["sparsifier"])
    resumed_scheduler.load_state_dict(saved["scheduler"])
    assert all(torch.equal(_masks(resumed)[k], m) for k, m in _masks(first).items())
    run(resumed, resumed_scheduler, range(3, 7))
    assert [g["sparsity_level"] for g in resumed.groups] == [0.6, 0.3, 0.3]
    assert all(torch.equal(_masks(resumed)[k], m) for k, m in _masks(whole).items())


def test_a_level_change_stays_pending_until_the_sparsifier_steps():
    model, sparsifier = Net(), MagnitudeSparsifier()
    sparsifier.prepare(model, magnitude_config(model, 0.5))
    scheduler = ScheduledPruning(sparsifier, SparsitySchedule(final_sparsity=0.5, start_epoch=1,
                                                              end_epoch=1, inter_func="one_shot"))
    sparsifier.step()
    scheduler.step(1)  # the change to 0.5 ...
    scheduler.step(2)  # ... is not lost by a step with no change
    assert sparsifier.enable_mask_update
    sparsifier.step()
    assert sum(int((~m).sum()) for m in _masks(sparsifier).values()) > 0
    scheduler.step(3)
    assert not sparsifier.enable_mask_update
