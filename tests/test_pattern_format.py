"""What is the pattern format's own (the contract every kind shares is in
test_formats.py): PatDNN's library and connectivity rule (the training
layer's, one rule in one place), an explicit (library, ids) pair, any mask,
random libraries for benchmarks, and every malformed topology refused naming
its field."""
import pytest
import torch

from sparsekernels.formats.pattern import Pattern
from sparsekernels.pruning.pattern import assign_patterns


def _weight(cout=6, cin=5, k=(3, 3), seed=0):
    return torch.randn(cout, cin, *k, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("level", [0.0, 0.4, 5 / 9, 0.7, 0.9, 1.0])
def test_l2_is_the_training_layers_rule(level):
    w = _weight()
    fmt = Pattern.from_dense(w, sparsity=level, num_patterns=4, entries=4)
    keep, library, ids = assign_patterns(w, level, num_patterns=4, entries=4)
    assert torch.equal(fmt.mask(), keep)
    assert torch.equal(fmt.library(), library) and torch.equal(fmt.pattern_id(), ids)
    torch.testing.assert_close(fmt.to_dense(), w * keep, rtol=0, atol=0)


def test_patterns_keep_the_centre_and_the_level_drops_whole_kernels():
    w = _weight(cout=8, cin=8)
    fmt = Pattern.from_dense(w, sparsity=1 - 0.5 * 4 / 9, num_patterns=8, entries=4)
    lib = fmt.library()
    assert lib.shape[0] <= 8 and lib[:, 1, 1].all() and (lib.flatten(1).sum(1) == 4).all()
    assert fmt.connectivity_sparsity == pytest.approx(0.5)
    kept = fmt.mask().flatten(2).any(2)
    assert int(kept.sum()) == fmt.nnz == 32
    assert fmt.sparsity == pytest.approx(1 - 0.5 * 4 / 9)


def test_random_is_seeded_with_the_same_counts_as_l2():
    w = _weight(cout=7)
    a = Pattern.from_dense(w, sparsity=0.8, criterion="random", seed=5)
    b = Pattern.from_dense(w, sparsity=0.8, criterion="random", seed=5)
    c = Pattern.from_dense(w, sparsity=0.8, criterion="random", seed=6)
    d = Pattern.from_dense(w, sparsity=0.8, criterion="l2")
    assert torch.equal(a.mask(), b.mask()) and not torch.equal(a.mask(), c.mask())
    assert a.nnz == d.nnz and a.values.numel() == d.values.numel()
    assert a.library()[:, 1, 1].all() and a.num_patterns == 8


def test_from_ids_keeps_the_given_library_order_and_drops_minus_one():
    w = _weight(cout=2, cin=3)
    library = torch.zeros(2, 3, 3, dtype=torch.bool)
    library[0, 0, :] = True  # top row
    library[1, :, 2] = True  # right column
    ids = torch.tensor([[1, -1, 0], [0, 0, -1]])
    fmt = Pattern.from_ids(w, library, ids)
    assert torch.equal(fmt.library(), library) and torch.equal(fmt.pattern_id(), ids)
    want = torch.zeros_like(w)
    for o, i in [(0, 0), (0, 2), (1, 0), (1, 1)]:
        want[o, i] = w[o, i] * library[ids[o, i]]
    torch.testing.assert_close(fmt.to_dense(), want, rtol=0, atol=0)
    # values: kernel by kernel in CSR order, each kernel's taps ascending
    assert torch.equal(fmt.values[:3], w[0, 0, :, 2])


def test_from_mask_takes_any_mask_with_patterns_of_mixed_sizes():
    w = _weight(cout=5, cin=4, k=(2, 3))
    mask = torch.rand(w.shape, generator=torch.Generator().manual_seed(1)) < 0.4
    mask[0] = False  # an output channel with no kernel
    fmt = Pattern.from_mask(w, mask)
    assert torch.equal(fmt.mask(), mask)
    sizes = fmt.library().flatten(1).sum(1)
    assert sizes.unique().numel() > 1
    torch.testing.assert_close(fmt.to_dense(), w * mask, rtol=0, atol=0)


def test_groups_and_fully_pruned():
    w = _weight(cout=6, cin=2)
    fmt = Pattern.from_dense(w, sparsity=0.8, groups=3)
    topo = fmt.topology()
    assert topo.cin == 6 and topo.col_ptr.numel() == 7
    assert int(topo.col_ptr[-1]) == fmt.nnz
    empty = Pattern.pruned((4, 3, 3, 3), device="meta")
    assert empty.nnz == 0 and empty.topology().value_tap.numel() == 0
    none = Pattern.from_dense(w, sparsity=1.0)
    assert none.nnz == 0 and not none.to_dense().any()


def _raw(fmt, **edits):
    state = {**fmt.state_dict(), **edits}
    return Pattern.from_state_dict(state)


@pytest.mark.parametrize("edit,message", [
    (lambda f: {"pattern_idx": f.pattern_idx.clone().fill_(9)}, "pattern_idx: entry 0 = 9"),
    (lambda f: {"pattern_idx": f.pattern_idx.clone().fill_(-1)}, "pattern_idx: entry 0 = -1"),
    (lambda f: {"pattern_idx": f.pattern_idx[:-1]}, "pattern_idx: expected"),
    (lambda f: {"chan_idx": f.chan_idx.clone().fill_(5)}, "chan_idx"),
    (lambda f: {"pattern_taps": f.pattern_taps.clone().fill_(9)}, "pattern_taps"),
    (lambda f: {"pattern_taps": f.pattern_taps.flip(0).contiguous()}, "pattern_taps"),
    (lambda f: {"pattern_ptr": torch.tensor([0], dtype=torch.int32)}, "at least one pattern"),
    (lambda f: {"pattern_ptr": torch.cat([f.pattern_ptr, f.pattern_ptr[-1:]])},
     "pattern_taps: pattern"),
    (lambda f: {"row_ptr": f.row_ptr.flip(0).contiguous()}, "row_ptr"),
    (lambda f: {"values": f.values[:-1]}, "values: expected"),
    (lambda f: {"values": f.values[:, None]}, "values: expected a 1-D"),
    (lambda f: {"chan_idx": f.chan_idx.long()}, "chan_idx: expected dtype torch.int32"),
    (lambda f: {"meta": torch.tensor([6, 5, 3, 3])}, "meta"),
])
def test_malformed_topology_is_refused_naming_the_field(edit, message):
    fmt = Pattern.from_dense(_weight(), sparsity=0.7, num_patterns=4)
    with pytest.raises((ValueError, TypeError), match=message):
        _raw(fmt, **edit(fmt))


@pytest.mark.parametrize("call,message", [
    (lambda w: Pattern.from_dense(w, 1.5), "sparsity"),
    (lambda w: Pattern.from_dense(w, 0.5, criterion="l1"), "criterion"),
    (lambda w: Pattern.from_dense(w, 0.5, num_patterns=0), "num_patterns"),
    (lambda w: Pattern.from_dense(w[:, :, :2], 0.5), "require_center"),
    (lambda w: Pattern.from_ids(w, torch.ones(2, 3, 3), torch.zeros(6, 5)), "library"),
    (lambda w: Pattern.from_ids(w, torch.ones(2, 3, 3, dtype=torch.bool),
                                torch.full((6, 5), 2)), "pattern_id"),
    (lambda w: Pattern.from_ids(w, torch.ones(2, 3, 3, dtype=torch.bool),
                                torch.zeros(5, 5, dtype=torch.long)), "pattern_id"),
    (lambda w: Pattern.from_mask(w, torch.ones(6, 5, 3)), "mask"),
])
def test_encoders_name_the_bad_argument(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(_weight())
