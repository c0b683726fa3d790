"""What every registered kind's format must do, whatever its layout: decode
to the weight times its mask, round-trip its state bit-exactly, move between
dtypes, build a fully pruned weight on any device, and carry its topology
through the custom ops' arguments. Kind-specific behaviour (1xN's blocks, its
criteria, its padded rows) lives in test_<slug>_format.py."""
import io

import pytest
import torch

from sparsekernels.kinds import KINDS

# Each kind's own parameters to run the contract with (several, odd ones included).
KIND_PARAMS = {"block1xn": [{"n": 4}, {"n": 3}, {"n": 1}], "stripe": [{}], "pattern": [{}]}
CASES = [(slug, params) for slug in KINDS for params in KIND_PARAMS.get(slug, [])]
IDS = [f"{slug}-{'-'.join(f'{k}{v}' for k, v in p.items())}" for slug, p in CASES]


def test_every_registered_kind_has_cases():
    assert set(KIND_PARAMS) == set(KINDS)


def _format(slug, params, sparsity=0.5, groups=2, dtype=torch.float32):
    w = torch.randn(12, 5, 3, 3, generator=torch.Generator().manual_seed(0), dtype=dtype)
    fmt = KINDS[slug].format.from_dense(w, sparsity=sparsity, criterion="random", groups=groups,
                                        seed=0, **params)
    return w, fmt


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 1.0])
def test_decode_is_weight_times_mask(slug, params, sparsity):
    w, fmt = _format(slug, params, sparsity)
    torch.testing.assert_close(fmt.to_dense(), w * fmt.mask(), rtol=0, atol=0)
    # within a kind's granularity (pattern: 4 of 9 kept is a floor of 5/9)
    assert fmt.sparsity == pytest.approx(sparsity, abs=0.06)


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
def test_state_dict_roundtrip_is_bit_exact(slug, params):
    _, fmt = _format(slug, params)
    buf = io.BytesIO()
    torch.save(fmt.state_dict(), buf)
    buf.seek(0)
    back = type(fmt).from_state_dict(torch.load(buf, weights_only=True))
    for name in (*fmt.INDEX_TENSORS, "values"):
        assert torch.equal(getattr(back, name), getattr(fmt, name)), name
    assert back.meta() == fmt.meta() and back.params() == params


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
def test_to_moves_values_and_keeps_indices(slug, params):
    _, fmt = _format(slug, params)
    moved = fmt.to(dtype=torch.float64)
    assert moved.values.dtype == torch.float64 and moved.meta() == fmt.meta()
    for name in fmt.INDEX_TENSORS:
        assert torch.equal(getattr(moved, name), getattr(fmt, name))
    torch.testing.assert_close(moved.to_dense(), fmt.to_dense().double())


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_pruned_keeps_nothing_on_any_device(slug, params, device):
    fmt = KINDS[slug].format.pruned((12, 5, 3, 3), groups=2, device=device, **params)
    assert fmt.values.numel() == 0 and fmt.sparsity == 1.0 and fmt.device.type == device
    assert fmt.topology().shape == (12, 5, 3, 3)


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
def test_topology_travels_through_the_op_arguments(slug, params):
    _, fmt = _format(slug, params)
    topo = fmt.topology()
    tensors, meta = topo.as_op_args()
    assert meta == fmt.meta()
    again = type(topo).from_op_args(tensors, meta)
    assert again.shape == topo.shape and again.sparsity == pytest.approx(fmt.sparsity)
    assert all(torch.equal(a, b) for a, b in zip(again.as_op_args()[0], tensors))


@pytest.mark.parametrize("slug,params", CASES, ids=IDS)
def test_module_of_the_kind_wraps_the_format(slug, params):
    _, fmt = _format(slug, params)
    mod = KINDS[slug].module.from_format(fmt, padding=1)
    torch.testing.assert_close(mod.to_dense().weight, fmt.to_dense())
    x = torch.randn(2, 10, 6, 6)
    torch.testing.assert_close(mod(x), KINDS[slug].conv2d(x, fmt, padding=1, groups=2))
