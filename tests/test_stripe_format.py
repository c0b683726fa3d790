"""What is the stripe format's own (the contract every kind shares is in
test_formats.py): stripes ranked by norm or drawn at random, masks that must be
stripe-structured, and every malformed topology refused naming its field."""
import pytest
import torch

from sparsekernels.formats.stripe import Stripe


def _weight(cout=6, cin=4, k=(3, 3), seed=0):
    return torch.randn(cout, cin, *k, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


@pytest.mark.parametrize("criterion,p", [("l1", 1), ("l2", 2)])
def test_norm_criteria_prune_the_weakest_stripes(criterion, p):
    w = _weight()
    fmt = Stripe.from_dense(w, sparsity=0.5, criterion=criterion)
    norms = w.norm(p=p, dim=1).flatten()  # [Cout * Kh * Kw], stripe (o, tap)
    kept = fmt.mask().any(1).flatten()
    assert kept.sum() == norms.numel() // 2
    assert norms[kept].min() >= norms[~kept].max()


def test_random_is_seeded_and_exact_in_count():
    w = _weight(cout=7)
    a = Stripe.from_dense(w, sparsity=0.3, criterion="random", seed=5)
    b = Stripe.from_dense(w, sparsity=0.3, criterion="random", seed=5)
    c = Stripe.from_dense(w, sparsity=0.3, criterion="random", seed=6)
    assert torch.equal(a.mask(), b.mask()) and not torch.equal(a.mask(), c.mask())
    assert a.nnz == 63 - round(0.3 * 63)


def test_from_mask_keeps_exactly_the_masked_stripes_and_empty_filters():
    w = _weight()
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[0, :, 1, 2] = True
    mask[3, :, 0, 0] = True
    mask[3, :, 2, 1] = True  # filters 1, 2, 4, 5 keep no stripe
    fmt = Stripe.from_mask(w, mask)
    assert fmt.row_ptr.tolist() == [0, 1, 1, 1, 3, 3, 3]
    assert fmt.tap_idx.tolist() == [5, 0, 7]
    torch.testing.assert_close(fmt.to_dense(), w * mask, rtol=0, atol=0)


def test_from_mask_names_the_first_partly_kept_stripe():
    w = _weight()
    mask = torch.zeros_like(w, dtype=torch.bool)
    mask[2, 1, 0, 2] = True
    with pytest.raises(ValueError, match=r"stripe \(output channel 2, kh=0, kw=2\) is partly kept"):
        Stripe.from_mask(w, mask)


def test_groups_and_depthwise():
    w = _weight(cout=8, cin=1)
    fmt = Stripe.from_dense(w, sparsity=0.5, criterion="random", groups=8, seed=0)
    assert fmt.values.shape == (fmt.nnz, 1)
    topo = fmt.topology()
    # per (group, tap) column, the stripes of that group at that tap
    for col in range(8 * 9):
        g, tap = divmod(col, 9)
        rows = topo.stripe_row[topo.tap_ptr[col]:topo.tap_ptr[col + 1]]
        assert all(int(r) == g for r in rows)
        for s in topo.stripe_idx[topo.tap_ptr[col]:topo.tap_ptr[col + 1]]:
            assert int(topo.tap_idx[s]) == tap


def _parts(**override):
    fmt = Stripe.from_dense(_weight(), sparsity=0.5, criterion="random", seed=0)
    parts = dict(row_ptr=fmt.row_ptr.clone(), tap_idx=fmt.tap_idx.clone(),
                 values=fmt.values.clone(), shape=fmt.shape, groups=1)
    parts.update(override)
    return parts


@pytest.mark.parametrize("edit,message", [
    (lambda p: p["tap_idx"].__setitem__(0, 9), r"tap_idx: entry 0 = 9 is out of range \[0, 9\)"),
    (lambda p: p["tap_idx"].__setitem__(0, -1), "tap_idx: entry 0 = -1 is out of range"),
    (lambda p: p["row_ptr"].__setitem__(-1, 99), "row_ptr: must end at nnz"),
    (lambda p: p["row_ptr"].__setitem__(0, 1), "row_ptr: must start at 0"),
    (lambda p: p.update(row_ptr=p["row_ptr"][:-1]), r"row_ptr: expected 7 entries"),
    (lambda p: p.update(values=p["values"][:, :3]), r"values: expected shape \[nnz="),
    (lambda p: p.update(tap_idx=p["tap_idx"].long()), "tap_idx: expected dtype torch.int32"),
    (lambda p: p.update(shape=(6, 4, 3)), "shape: expected"),
    (lambda p: p.update(groups=4), "groups: 4 does not divide out_channels=6"),
])
def test_malformed_topology_is_refused_naming_the_field(edit, message):
    parts = _parts()
    edit(parts)
    with pytest.raises((ValueError, TypeError), match=message):
        Stripe(**parts)


def test_tap_idx_must_increase_within_a_row():
    parts = _parts()
    row = next(r for r in range(6) if parts["row_ptr"][r + 1] - parts["row_ptr"][r] >= 2)
    j = int(parts["row_ptr"][row])
    parts["tap_idx"][j], parts["tap_idx"][j + 1] = parts["tap_idx"][j + 1].item(), parts["tap_idx"][j].item()
    with pytest.raises(ValueError, match=f"tap_idx: not strictly increasing within row {row}"):
        Stripe(**parts)


@pytest.mark.parametrize("bad,message", [
    (dict(sparsity=1.5), "sparsity: expected a number in"),
    (dict(criterion="l3"), "criterion: expected one of"),
])
def test_from_dense_arguments(bad, message):
    with pytest.raises(ValueError, match=message):
        Stripe.from_dense(_weight(), **{"sparsity": 0.5, **bad})
