"""The 1xN format: its blocks, criteria, padded rows and transposed view (the
contract every kind's format meets is in test_formats.py)."""

import pytest
import torch

from sparsekernels import Block1xN


def _weight(cout=20, cin_g=6, k=(3, 3), seed=0):
    return torch.randn(cout, cin_g, *k, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n,groups", [(1, 1), (4, 1), (8, 2), (3, 2), (16, 1)])
@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 1.0])
def test_decode_is_weight_times_mask(n, groups, sparsity):
    w = _weight()
    fmt = Block1xN.from_dense(w, n, sparsity, "l1", groups)
    torch.testing.assert_close(fmt.to_dense(), w * fmt.mask(), rtol=0, atol=0)
    assert fmt.nnzb == fmt.num_blocks - int(sparsity * fmt.num_blocks + 0.5)


def test_blocks_are_n_outputs_by_one_input_by_whole_kernel():
    w = _weight(cout=8, cin_g=3)
    m = Block1xN.from_dense(w, 4, 0.5, "random", seed=1).mask()
    blocks = m.reshape(2, 4, 3, 9)  # [row, lane, cin, taps]
    assert (blocks.all(1).all(-1) == blocks.any(1).any(-1)).all()


def test_l1_prunes_lowest_blocks_first():
    w = torch.ones(8, 4, 3, 3)
    w[0:4, 2] = 0.01  # the weakest block
    w[4:8, 1] = 0.02  # the second weakest
    fmt = Block1xN.from_dense(w, 4, 2 / 8, "l1")
    assert not fmt.mask()[0:4, 2].any() and not fmt.mask()[4:8, 1].any()
    assert fmt.mask().sum() == 6 * 4 * 9


def test_padded_row_is_not_pruned_for_being_short():
    w = torch.ones(10, 4, 1, 1)  # N=8: rows of 8 and 2 real lanes, equal magnitudes
    w[0:8, 0] = 0.5
    fmt = Block1xN.from_dense(w, 8, 1 / 8, "l1")
    assert not fmt.mask()[0:8, 0].any()  # the weak full block goes, not a short one


def test_random_is_without_replacement_and_seeded():
    w = _weight(cout=64, cin_g=32)
    a = Block1xN.from_dense(w, 8, 0.7, "random", seed=3)
    b = Block1xN.from_dense(w, 8, 0.7, "random", seed=3)
    c = Block1xN.from_dense(w, 8, 0.7, "random", seed=4)
    assert a.nnzb == round(0.3 * a.num_blocks)
    assert torch.equal(a.col_idx, b.col_idx) and not torch.equal(a.mask(), c.mask())


def test_padded_lanes_never_cross_groups_or_channels():
    w = _weight(cout=12, cin_g=5)  # groups=2: cout_g=6, N=4 -> rows of 4 and 2
    fmt = Block1xN.from_dense(w, 4, 0.0, groups=2)
    assert fmt.row_ptr.numel() == 2 * 2 + 1
    assert torch.equal(fmt.values[fmt.row_ptr[1]:fmt.row_ptr[2], ..., 2:], torch.zeros(5, 3, 3, 2))
    torch.testing.assert_close(fmt.to_dense(), w)


def test_from_mask_roundtrip_and_rejects_partial_block():
    w = _weight(cout=12)
    fmt = Block1xN.from_dense(w, 4, 0.5, groups=2)
    again = Block1xN.from_mask(w, fmt.mask(), 4, groups=2)
    assert torch.equal(again.col_idx, fmt.col_idx) and torch.equal(again.values, fmt.values)
    bad = fmt.mask().clone()
    bad[5, 3, 1, 1] = ~bad[5, 3, 1, 1]
    with pytest.raises(ValueError, match=r"output channels 4\.\.5, input channel 3"):
        Block1xN.from_mask(w, bad, 4, groups=2)


def test_topology_transpose_lists_readers_of_each_channel():
    fmt = Block1xN.from_dense(_weight(cout=12), 4, 0.5, groups=2)
    t = fmt.topology()
    rows = torch.repeat_interleave(torch.arange(fmt.num_rows), (t.row_ptr[1:] - t.row_ptr[:-1]).long())
    for ch in range(2 * fmt.cin_per_group):
        blocks = t.block_idx[t.col_ptr[ch]:t.col_ptr[ch + 1]].long()
        g = rows[blocks] // fmt.rows_per_group
        assert ((g * fmt.cin_per_group + fmt.col_idx[blocks]) == ch).all()
        assert torch.equal(t.block_row[t.col_ptr[ch]:t.col_ptr[ch + 1]].long(), rows[blocks])
