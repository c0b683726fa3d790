"""The stripe CPU kernels through sparsekernels._C and ops/stripe_native.py:
every pass against float64 dense references (odd shapes, stride, padding,
dilation, groups, depthwise, channels_last and sliced inputs, empty batch,
sparsity 0 and 1, both SIMD paths), and the argument checks of the _C
functions (ValueError / TypeError naming the argument)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsekernels._ext import C
from sparsekernels.activation import NO_CLAMP
from sparsekernels.conv_args import ConvArgs
from sparsekernels.formats.stripe import Stripe

pytestmark = pytest.mark.skipif(C is None, reason="compiled kernels unavailable")

# (N, Cin, Cout, H, W, kernel, stride, padding, dilation, groups, sparsity)
CASES = [
    (2, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 0.5),
    (2, 8, 16, 9, 11, (3, 3), 2, 1, 1, 1, 0.5),
    (2, 8, 16, 9, 11, (3, 3), 1, 0, 1, 1, 0.6),
    (2, 8, 16, 9, 11, (3, 3), 1, 2, 2, 1, 0.5),
    (3, 8, 12, 10, 7, (3, 5), 2, 2, 2, 2, 0.3),
    (2, 6, 6, 8, 8, (3, 3), 1, 1, 1, 6, 0.5),      # depthwise
    (2, 6, 12, 7, 9, (3, 3), 2, 1, 1, 6, 0.4),     # depthwise multiplier 2, stride 2
    (1, 5, 7, 5, 6, (1, 1), 1, 0, 1, 1, 0.0),
    (2, 13, 17, 13, 15, (2, 3), 3, 3, 1, 1, 0.7),
    (2, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 1.0),    # fully pruned
    (0, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 0.5),    # empty batch
    (3, 24, 40, 15, 13, (3, 3), 1, 1, 1, 1, 0.75),  # several tiles per tap
    (1, 4, 8, 6, 5, (5, 5), 1, 4, 1, 2, 0.5),      # padding beyond the kernel reach
    # polyphase (stride != 1) layouts
    (2, 3, 16, 13, 11, (3, 3), 2, 1, 1, 1, 0.5),   # odd sizes, small Cin
    (2, 8, 12, 12, 10, (3, 3), (2, 1), 1, 1, 1, 0.5),
    (2, 8, 12, 9, 12, (3, 3), (1, 2), 0, 1, 1, 0.5),
    (2, 5, 9, 17, 14, (3, 3), 3, 1, 2, 1, 0.4),    # stride 3 with dilation
    (2, 6, 8, 11, 13, (3, 5), 2, (1, 2), 3, 1, 0.5),  # dilation with stride, tall pad
    (2, 8, 8, 10, 9, (3, 3), 2, 0, 1, 1, 0.0),     # no padding, dense
    (1, 4, 6, 7, 7, (1, 1), 2, 0, 1, 1, 0.3),      # 1x1 stride 2
    (2, 4, 6, 5, 6, (3, 3), 2, 3, 1, 2, 0.5),      # padding beyond the kernel reach
]

TOPO = ("row_ptr", "tap_idx", "tap_ptr", "stripe_idx", "stripe_row")


def _make(case, dtype, seed=0):
    n, cin, cout, h, w, k, s, p, d, g, sp = case
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout, cin // g, *k, generator=gen, dtype=dtype)
    fmt = Stripe.from_dense(weight, sp, "random", g, seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    pair = lambda v: tuple(v) if isinstance(v, tuple) else (v, v)
    conv = ConvArgs(pair(s), pair(p), pair(d), g)
    return fmt, x, bias, conv


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _layout(t, how):
    if how == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    if how == "sliced":  # non-contiguous: every other column of a wider tensor
        wide = torch.zeros(*t.shape[:3], 2 * t.shape[3], dtype=t.dtype)
        wide[..., ::2] = t
        return wide[..., ::2]
    return t


@pytest.mark.parametrize("simd", ["best", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c[:5])) + f"-k{c[5]}"
                         f"s{c[6]}p{c[7]}d{c[8]}g{c[9]}sp{c[10]}")
def test_passes_match_dense(case, dtype, simd, monkeypatch):
    from sparsekernels.ops import stripe_native as native

    if simd == "generic":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", "generic")
    fmt, x, bias, conv = _make(case, dtype)
    topo = fmt.topology()
    wd = fmt.to_dense().double()
    args = (conv.stride, conv.padding, conv.dilation, conv.groups)
    ref = F.conv2d(x.double(), wd, bias.double(), *args)
    go = torch.randn(ref.shape, dtype=dtype)
    gi_ref = torch.nn.grad.conv2d_input(x.shape, wd, go.double(), *args)
    gw_ref = fmt.gather(torch.nn.grad.conv2d_weight(x.double(), wd.shape, go.double(), *args))
    for how in ("contiguous", "channels_last", "sliced"):
        xi, goi = _layout(x, how), _layout(go, how)
        out = native.forward(xi, fmt.values, topo, bias, conv)
        assert out.shape == ref.shape and out.dtype == dtype and out.is_contiguous()
        torch.testing.assert_close(out.double(), ref, **_tol(dtype))
        gi = native.grad_input(goi, fmt.values, topo, conv, x.shape[2:])
        assert gi.shape == x.shape
        torch.testing.assert_close(gi.double(), gi_ref, **_tol(dtype))
        gw = native.grad_weight(xi, goi, topo, conv)
        assert gw.shape == fmt.values.shape
        torch.testing.assert_close(gw.double(), gw_ref, **_tol(dtype))
    # no bias: output channels without a stripe are exactly 0
    out = native.forward(x, fmt.values, topo, None, conv)
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), wd, None, *args), **_tol(dtype))


def test_half_precision_runs_in_float32():
    from sparsekernels.ops import stripe_native as native

    fmt, x, bias, conv = _make(CASES[0], torch.float32)
    topo = fmt.topology()
    for dt in (torch.float16, torch.bfloat16):
        out = native.forward(x.to(dt), fmt.values.to(dt), topo, bias.to(dt), conv)
        assert out.dtype == dt
        ref = F.conv2d(x.to(dt).double(), fmt.to_dense().to(dt).double(),
                       bias.to(dt).double(), conv.stride, conv.padding)
        torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=3e-2)


def test_results_do_not_depend_on_threads():
    fmt, x, bias, conv = _make(CASES[11], torch.float64)
    topo = fmt.topology()
    t = [getattr(topo, f) for f in TOPO]
    go = torch.randn(3, 40, 15, 13, dtype=torch.float64)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append((C.stripe_forward(x, fmt.values, *t, bias, 40, 3, 3, [1, 1], [1, 1],
                                          [1, 1], 1, *NO_CLAMP, None),
                         C.stripe_grad_input(go, fmt.values, *t, 24, 15, 13, 3, 3, [1, 1],
                                             [1, 1], [1, 1], 1),
                         C.stripe_grad_weight(x, go, *t, 3, 3, [1, 1], [1, 1], [1, 1], 1)))
    finally:
        torch.set_num_threads(before)
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- argument checks ------------------------------------------------------

def _fwd_args():
    fmt, x, bias, conv = _make((2, 8, 16, 9, 11, (3, 3), 1, 1, 1, 2, 0.5), torch.float32)
    topo = fmt.topology()
    t = {f: getattr(topo, f).clone() for f in TOPO}
    return fmt, x, bias, t


def _call_forward(x, values, t, bias=None, cout=16, k=(3, 3), groups=2):
    return C.stripe_forward(x, values, *[t[f] for f in TOPO], bias, cout, *k, [1, 1], [1, 1],
                            [1, 1], groups, *NO_CLAMP, None)


def test_valid_arguments_pass():
    fmt, x, bias, t = _fwd_args()
    _call_forward(x, fmt.values, t, bias)
    C.stripe_check_topology(*[t[f] for f in TOPO], 16, 8, 3, 3, 2)


@pytest.mark.parametrize("edit, match", [
    (lambda t: t["tap_idx"].__setitem__(3, 9), r"tap_idx: entry 3 = 9 is out of range \[0, 9\) "
                                               r"\(kernel positions Kh\*Kw\)"),
    (lambda t: t["tap_idx"].__setitem__(0, -1), r"tap_idx: entry 0 = -1 is out of range"),
    (lambda t: t["row_ptr"].__setitem__(0, 1), r"row_ptr: must start at 0"),
    (lambda t: t["row_ptr"].__setitem__(-1, 0), r"row_ptr: (must end at nnz|decreases)"),
    (lambda t: t["stripe_idx"].__setitem__(slice(0, 2), t["stripe_idx"][:2].flip(0).clone()),
     r"tap_ptr/stripe_idx/stripe_row: not the transpose of row_ptr/tap_idx"),
    (lambda t: t["stripe_row"].__setitem__(0, 15), r"tap_ptr/stripe_idx/stripe_row: not the "
                                                   r"transpose"),
    (lambda t: t["tap_ptr"].__setitem__(1, 0), r"tap_ptr/stripe_idx/stripe_row: not the "
                                               r"transpose"),
])
def test_bad_topology_is_a_value_error(edit, match):
    fmt, x, bias, t = _fwd_args()
    # a row with at least two stripes exists at this sparsity, so the flips above bite
    edit(t)
    with pytest.raises(ValueError, match=match):
        _call_forward(x, fmt.values, t, bias)
    with pytest.raises(ValueError, match=match):
        C.stripe_check_topology(*[t[f] for f in TOPO], 16, 8, 3, 3, 2)


@pytest.mark.parametrize("field", TOPO)
def test_wrong_length_names_the_field(field):
    fmt, x, bias, t = _fwd_args()
    t[field] = torch.cat([t[field], t[field][-1:]])
    # a longer tap_idx is a longer CSR: row_ptr then ends short of it
    name = "row_ptr: must end at nnz" if field == "tap_idx" else f"{field}: expected shape"
    with pytest.raises(ValueError, match=name):
        _call_forward(x, fmt.values, t, bias)


@pytest.mark.parametrize("field", TOPO)
def test_wrong_index_dtype_is_a_type_error(field):
    fmt, x, bias, t = _fwd_args()
    t[field] = t[field].long()
    with pytest.raises(TypeError, match=rf"{field}: expected dtype torch.int32"):
        _call_forward(x, fmt.values, t, bias)


def test_bad_values_bias_and_shapes():
    fmt, x, bias, t = _fwd_args()
    with pytest.raises(TypeError, match=r"values: expected dtype"):
        _call_forward(x, fmt.values.double(), t, bias)
    with pytest.raises(ValueError, match=r"values: expected shape \[nnz="):
        _call_forward(x, fmt.values[:, :3], t, bias)
    with pytest.raises(TypeError, match=r"bias: expected dtype"):
        _call_forward(x, fmt.values, t, bias.double())
    with pytest.raises(ValueError, match=r"bias: expected shape"):
        _call_forward(x, fmt.values, t, bias[:3])
    with pytest.raises(ValueError, match=r"input: expected a 4-D tensor"):
        _call_forward(x[0], fmt.values, t, bias)
    with pytest.raises(ValueError, match=r"groups: 3 does not divide"):
        _call_forward(x, fmt.values, t, bias, groups=3)
    with pytest.raises(ValueError, match=r"kernel height: expected an integer in \[1"):
        _call_forward(x, fmt.values, t, bias, k=(0, 3))
    with pytest.raises(ValueError, match=r"row_ptr: expected shape \[19\]"):
        C.stripe_check_topology(*[t[f] for f in TOPO], 18, 8, 3, 3, 2)
    with pytest.raises(TypeError, match=r"expected dtype|not implemented for 'Int'"):
        _call_forward(x.int(), fmt.values, t, bias)


def test_grad_argument_checks():
    fmt, x, bias, t = _fwd_args()
    tt = [t[f] for f in TOPO]
    go = torch.randn(2, 16, 9, 11)
    with pytest.raises(ValueError, match=r"grad_out: spatial size"):
        C.stripe_grad_input(go[..., :5], fmt.values, *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1],
                            [1, 1], 2)
    with pytest.raises(ValueError, match=r"values: expected shape"):
        C.stripe_grad_input(go, fmt.values[:-1], *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=r"grad_out: shape"):
        C.stripe_grad_weight(x, go[:1], *tt, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(TypeError, match=r"grad_out: expected dtype"):
        C.stripe_grad_weight(x, go.double(), *tt, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=r"stride: expected 2 entries"):
        C.stripe_grad_weight(x, go, *tt, 3, 3, [1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=r"tap_ptr: expected shape \[10\]"):
        C.stripe_grad_input(go, fmt.values, *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1], [1, 1], 1)
