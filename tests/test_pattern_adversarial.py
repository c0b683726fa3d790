"""Adversarial operands at every entry point of the pattern op: the custom ops
called directly (every backend), the module's buffers and its state_dict.
Each case must end in a clear ValueError/TypeError naming the argument (or
nn's "size mismatch"), never a crash, an out-of-bounds access or a silently
wrong result. scripts/sanitize.sh runs this file against an ASan/UBSan build.
"""
import pytest
import torch
import torch.nn.functional as F

from sparsekernels.formats.pattern import Pattern, PatternTopology
from sparsekernels.nn import PatternConv2d
from sparsekernels.ops import backends
import sparsekernels.ops.pattern  # noqa: F401  (defines the custom ops)

OPS = torch.ops.sparsekernels
BACKENDS = ["cpu", "reference"] + (
    ["triton"] if backends.triton_available() and backends._triton_runs_on(torch.device("cpu"))
    else []
)
TOPOLOGY = PatternTopology.TENSORS


def _operands(cout=8, cin=6, groups=2, batch=2, hw=5):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(cout, cin // groups, 3, 3, generator=gen)
    fmt = Pattern.from_dense(weight, 0.7, "random", groups=groups, seed=0)
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
    "forward": lambda a, b: OPS.pattern_conv2d(a["x"], a["values"], _topology(a), a["meta"],
                                               a["bias"], **_conv(a, b)),
    "grad_input": lambda a, b: OPS.pattern_conv2d_grad_input(
        a["grad_out"], a["values"], _topology(a), a["meta"], input_hw=list(a["x"].shape[2:]),
        **_conv(a, b)),
    "grad_weight": lambda a, b: OPS.pattern_conv2d_grad_weight(
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


def _swap_chans(a):
    """A row with two kernels gets its input channels reversed."""
    rp = a["row_ptr"]
    r = next(r for r in range(len(rp) - 1) if rp[r + 1] - rp[r] >= 2)
    j = int(rp[r])
    a["chan_idx"][[j, j + 1]] = a["chan_idx"][[j + 1, j]].clone()


def _other_pattern(a):
    """A kernel switched to a pattern of the same size: value_tap no longer fits."""
    a["pattern_idx"][0] = (int(a["pattern_idx"][0]) + 1) % (a["pattern_ptr"].numel() - 1)


CORRUPTIONS = [
    ("pattern_idx past the library", "pattern_idx", _set("pattern_idx", 0, 8)),
    ("pattern_idx huge", "pattern_idx", _set("pattern_idx", -1, 2**31 - 1)),
    ("pattern_idx negative", "pattern_idx", _set("pattern_idx", 1, -1)),
    ("pattern_idx int64", "pattern_idx", _put("pattern_idx", lambda a: a["pattern_idx"].long())),
    ("another pattern", "value_tap", _other_pattern),
    ("pattern_taps past the kernel", "pattern_taps", _set("pattern_taps", 0, 9)),
    ("pattern_taps negative", "pattern_taps", _set("pattern_taps", 2, -1)),
    ("pattern_ptr empty pattern", "pattern_taps|pattern_ptr", _set("pattern_ptr", 1, 0)),
    ("pattern_ptr overruns", "pattern_ptr", _set("pattern_ptr", -1, 10**6)),
    ("pattern_ptr none", "pattern_ptr", _put("pattern_ptr", lambda a: a["pattern_ptr"][:1].clone())),
    ("chan_idx past the group", "chan_idx", _set("chan_idx", 0, 3)),
    ("chan_idx huge", "chan_idx", _set("chan_idx", -1, 2**31 - 1)),
    ("chan_idx unsorted", "chan_idx", _swap_chans),
    ("row_ptr starts at 1", "row_ptr", _set("row_ptr", 0, 1)),
    ("row_ptr overruns", "row_ptr", _set("row_ptr", -1, 10**6)),
    ("row_ptr decreases", "row_ptr", _set("row_ptr", 1, -5)),
    ("row_ptr short", "row_ptr", _put("row_ptr", lambda a: a["row_ptr"][:-1].clone())),
    ("value_ptr forged", "value_ptr", _set("value_ptr", 1, 1)),
    ("value_ptr overruns", "value_ptr", _set("value_ptr", -1, 10**6)),
    ("value_tap forged", "value_tap", _set("value_tap", 0, 8)),
    ("value_tap past the kernel", "value_tap", _set("value_tap", 0, 100)),
    ("value_tap short", "value_tap|values", _put("value_tap", lambda a: a["value_tap"][:-1].clone())),
    ("col_ptr overruns", "col_ptr", _set("col_ptr", 1, 10**6)),
    ("col_ptr short", "col_ptr", _put("col_ptr", lambda a: a["col_ptr"][:-1].clone())),
    ("kernel_idx out of range", "kernel_idx", _set("kernel_idx", 0, 10**6)),
    ("kernel_idx permuted", "kernel_idx", _put("kernel_idx", lambda a: a["kernel_idx"].flip(0))),
    ("kernel_row out of range", "kernel_row", _set("kernel_row", 0, -3)),
    ("kernel_row wrong", "kernel_row", _put("kernel_row", lambda a: a["kernel_row"].flip(0))),
    ("kernel_row float", "kernel_row", _put("kernel_row", lambda a: a["kernel_row"].float())),
    ("meta short", "meta", _put("meta", [8, 3, 3, 3])),
    ("kernel of another size", "pattern|value|grad_out|input", _put("meta", [8, 3, 2, 2, 2])),
    ("topology short", "topology", _put("topology", lambda a: _topology(a)[:4])),
    ("groups zero", "groups", _put("groups", 0)),
    ("groups narrows to 2 in int32", "groups", _put("groups", 2**32 + 2)),
    ("values short", "values", _put("values", lambda a: a["values"][1:].clone())),
    ("values 2-D", "values", _put("values", lambda a: a["values"][None].clone())),
    ("values float64", "values", _put("values", lambda a: a["values"].double())),
    ("stride narrows to 0 in int32", "stride", _put("stride", [2**32, 1])),
    ("dilation zero", "dilation", _put("dilation", [0, 1])),
]
# values only enter forward and grad-input
VALUE_CASES = {"values short", "values 2-D", "values float64"}


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_index_edited_in_place_after_cached_calls_is_refused(backend):
    # The CPU bindings cache validated topologies: a repeated call with an
    # index tensor edited in place (same tensor, same storage) is re-checked.
    a = _operands()
    for name, run in PASSES.items():
        run(a, backend)
        run(a, backend)
    saved = int(a["pattern_idx"][0])
    a["pattern_idx"][0] = 99
    for name, run in PASSES.items():
        with pytest.raises(ValueError, match="pattern_idx"):
            run(a, backend)
    a["pattern_idx"][0] = saved
    with torch.no_grad():
        a["values"].mul_(-2)  # new weights, same topology: still the right conv
    w = Pattern(a["pattern_ptr"], a["pattern_taps"], a["row_ptr"], a["chan_idx"],
                a["pattern_idx"], a["values"], (8, 3, 3, 3), groups=2)
    out = PASSES["forward"](a, backend)
    ref = F.conv2d(a["x"].double(), w.to_dense().double(), a["bias"].double(), padding=1,
                   groups=2)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("field,index,value", [("kernel_idx", 0, 10**6), ("kernel_row", 0, -3),
                                               ("value_tap", 0, 100), ("col_ptr", 1, 10**6)])
def test_transpose_edited_in_place_after_cached_grad_calls_is_refused(backend, field, index,
                                                                       value):
    # Grad-input and grad-weight cache their plans per validated topology: an
    # index edited in place (here through numpy, which the version counter
    # misses) after cached grad calls is re-checked, not read from the plan.
    a = _operands()
    grads = {k: PASSES[k] for k in ("grad_input", "grad_weight")}
    refs = {}
    for name, run in grads.items():
        refs[name] = run(a, backend)
        run(a, backend)
    saved = int(a[field][index])
    a[field].numpy()[index] = value
    for name, run in grads.items():
        with pytest.raises(ValueError, match=field):
            run(a, backend)
    a[field].numpy()[index] = saved
    for name, run in grads.items():
        torch.testing.assert_close(run(a, backend), refs[name])


def test_buffers_edited_after_construction_never_reach_a_kernel():
    mod = PatternConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.7)
    with torch.no_grad():
        mod.pattern_idx[0] = 100
    for backend in BACKENDS:
        mod.backend = backend
        with pytest.raises(ValueError, match="pattern_idx"):
            mod(torch.randn(1, 4, 5, 5))


def test_state_dict_with_a_bad_index_is_refused_before_any_kernel():
    mod = PatternConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.7)
    state = mod.state_dict()
    state["pattern_taps"] = state["pattern_taps"].clone()
    state["pattern_taps"][0] = 2**30
    target = PatternConv2d(4, 8, 3)
    with pytest.raises(ValueError, match="pattern_taps: entry 0 = 1073741824 is out of range"):
        target.load_state_dict(state)


def test_loaded_topology_of_another_size_is_adopted_whole():
    src = PatternConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.6)
    dst = PatternConv2d.from_dense(torch.nn.Conv2d(4, 8, 3), sparsity=0.9)
    dst.load_state_dict(src.state_dict())
    x = torch.randn(2, 4, 6, 6)
    torch.testing.assert_close(dst(x), src(x))
