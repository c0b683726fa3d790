"""Adversarial operands at every entry point of the stripe op: the custom ops
called directly (every backend), the module's buffers and its state_dict.
Each case must end in a clear ValueError/TypeError naming the argument (or
nn's "size mismatch"), never a crash, an out-of-bounds access or a silently
wrong result. scripts/sanitize.sh runs this file against an ASan/UBSan build.
"""
import pytest
import torch
import torch.nn.functional as F

from sparsekernels import Stripe
from sparsekernels.nn import StripeConv2d
from sparsekernels.ops import backends

OPS = torch.ops.sparsekernels
BACKENDS = ["cpu", "reference"] + (
    ["triton"] if backends.triton_available() and backends._triton_runs_on(torch.device("cpu"))
    else []
)
TOPOLOGY = ("row_ptr", "tap_idx", "tap_ptr", "stripe_idx", "stripe_row")


def _operands(cout=8, cin=6, groups=2, batch=2, hw=5):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(cout, cin // groups, 3, 3, generator=gen)
    fmt = Stripe.from_dense(weight, 0.5, "random", groups=groups, seed=0)
    topo = fmt.topology()
    x = torch.randn(batch, cin, hw, hw, generator=gen)
    out = F.conv2d(x, fmt.to_dense(), padding=1, groups=groups)
    a = {k: getattr(topo, k).clone() for k in TOPOLOGY}
    a.update(x=x, grad_out=torch.randn_like(out), values=fmt.values.clone(),
             bias=torch.randn(cout), meta=[cout, cin // groups, 3, 3, groups],
             stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=groups)
    return a


def _conv(a, backend):
    return dict(stride=a["stride"], padding=a["padding"], dilation=a["dilation"],
                groups=a["groups"], backend=backend)


def _topology(a):
    return a.get("topology", [a[k] for k in TOPOLOGY])


PASSES = {
    "forward": lambda a, b: OPS.stripe_conv2d(a["x"], a["values"], _topology(a), a["meta"],
                                              a["bias"], **_conv(a, b)),
    "grad_input": lambda a, b: OPS.stripe_conv2d_grad_input(
        a["grad_out"], a["values"], _topology(a), a["meta"], input_hw=list(a["x"].shape[2:]),
        **_conv(a, b)),
    "grad_weight": lambda a, b: OPS.stripe_conv2d_grad_weight(
        a["x"], a["grad_out"], _topology(a), a["meta"], **_conv(a, b)),
}


def _set(key, index, value):
    def change(a):
        a[key][index] = value
    return change


def _put(key, value):
    def change(a):
        a[key] = value(a) if callable(value) else value
    return change


def _swap_first_two_rows_taps(a):
    """A row with two stripes gets its taps reversed (not increasing)."""
    rp = a["row_ptr"]
    r = next(r for r in range(len(rp) - 1) if rp[r + 1] - rp[r] >= 2)
    j = int(rp[r])
    a["tap_idx"][[j, j + 1]] = a["tap_idx"][[j + 1, j]].clone()


CORRUPTIONS = [
    ("tap_idx past the kernel", "tap_idx", _set("tap_idx", 0, 9)),
    ("tap_idx huge", "tap_idx", _set("tap_idx", -1, 2**31 - 1)),
    ("tap_idx negative", "tap_idx", _set("tap_idx", 1, -1)),
    ("tap_idx unsorted", "tap_idx", _swap_first_two_rows_taps),
    ("tap_idx int64", "tap_idx", _put("tap_idx", lambda a: a["tap_idx"].long())),
    ("row_ptr starts at 1", "row_ptr", _set("row_ptr", 0, 1)),
    ("row_ptr overruns", "row_ptr", _set("row_ptr", -1, 10**6)),
    ("row_ptr decreases", "row_ptr", _set("row_ptr", 1, -5)),
    ("row_ptr short", "row_ptr", _put("row_ptr", lambda a: a["row_ptr"][:-1].clone())),
    ("tap_ptr overruns", "tap_ptr", _set("tap_ptr", 1, 10**6)),
    ("tap_ptr short", "tap_ptr", _put("tap_ptr", lambda a: a["tap_ptr"][:-1].clone())),
    ("stripe_idx out of range", "stripe_idx", _set("stripe_idx", 0, 10**6)),
    ("stripe_idx permuted", "stripe_idx", _put("stripe_idx", lambda a: a["stripe_idx"].flip(0))),
    ("stripe_row out of range", "stripe_row", _set("stripe_row", 0, -3)),
    ("stripe_row wrong", "stripe_row", _put("stripe_row", lambda a: a["stripe_row"].flip(0))),
    ("meta short", "meta", _put("meta", [8, 3, 3, 3])),
    ("kernel of another size", "tap_idx|tap_ptr|values|grad_out", _put("meta", [8, 3, 2, 2, 2])),
    ("topology short", "topology", _put("topology", lambda a: _topology(a)[:4])),
    ("groups zero", "groups", _put("groups", 0)),
    ("groups narrows to 2 in int32", "groups", _put("groups", 2**32 + 2)),
    ("values short", "values", _put("values", lambda a: a["values"][1:].clone())),
    ("values of another Cin", "values", _put("values", lambda a: a["values"][:, :2].clone())),
    ("values float64", "values", _put("values", lambda a: a["values"].double())),
    ("stride narrows to 0 in int32", "stride", _put("stride", [2**32, 1])),
    ("dilation zero", "dilation", _put("dilation", [0, 1])),
]
# values only enter forward and grad-input
VALUE_CASES = {"values short", "values of another Cin", "values float64"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("what,arg,corrupt", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_custom_ops_refuse_corrupt_operands(backend, what, arg, corrupt):
    for name, run in PASSES.items():
        if what in VALUE_CASES and name == "grad_weight":
            continue
        a = _operands()
        run(a, backend)  # intact: runs
        corrupt(a)
        with pytest.raises((ValueError, TypeError), match=arg):
            run(a, backend)


def test_buffers_edited_after_construction_never_reach_a_kernel():
    mod = StripeConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.5)
    with torch.no_grad():
        mod.tap_idx[0] = 100
    for backend in BACKENDS:
        mod.backend = backend
        with pytest.raises(ValueError, match="tap_idx"):
            mod(torch.randn(1, 4, 5, 5))


def test_state_dict_with_a_bad_index_is_refused_before_any_kernel():
    mod = StripeConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.5)
    state = mod.state_dict()
    state["tap_idx"] = state["tap_idx"].clone()
    state["tap_idx"][0] = 2**30
    target = StripeConv2d(4, 8, 3)
    with pytest.raises(ValueError, match="tap_idx: entry 0 = 1073741824 is out of range"):
        target.load_state_dict(state)


def test_state_from_a_layer_of_another_shape_is_a_size_mismatch():
    state = StripeConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.5).state_dict()
    with pytest.raises(RuntimeError, match="size mismatch"):
        StripeConv2d(4, 8, 5).load_state_dict(state)


def test_loaded_topology_of_another_size_is_adopted_whole():
    src = StripeConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.25)
    dst = StripeConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.75)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(dst(x), src(x))
