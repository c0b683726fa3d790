"""The pattern CPU kernels through sparsekernels._C and ops/pattern_native.py:
every pass against float64 dense references (odd shapes, stride, padding,
dilation, groups, depthwise, 1x1 / 5x5 / 7x7 / non-square kernels, libraries
of patterns of different sizes, channels_last and sliced inputs, empty
batch, no kernel dropped and every kernel dropped, both SIMD paths), NaN
isolation of pruned weights, gradcheck through pattern_conv2d, and the
argument checks of the _C functions (ValueError / TypeError naming the
argument)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sparsekernels._ext import C
from sparsekernels.activation import NO_CLAMP
from sparsekernels.conv_args import ConvArgs
import sparsekernels.ops.pattern  # noqa: F401  (defines the custom ops)
from sparsekernels.formats.pattern import Pattern, PatternTopology

pytestmark = pytest.mark.skipif(C is None, reason="compiled kernels unavailable")

TOPO = PatternTopology.TENSORS

# (N, Cin, Cout, H, W, kernel, stride, padding, dilation, groups, how): how is
# a from_dense sparsity (4-of-9 patterns, above 5/9 kernels dropped) or
# ("mask", p): an elementwise random mask keeping p (patterns of every size).
CASES = [
    (2, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 0.5556),
    (2, 8, 16, 9, 11, (3, 3), 2, 1, 1, 1, 0.7),
    (2, 8, 16, 9, 11, (3, 3), 1, 0, 1, 1, 0.0),
    (2, 8, 16, 9, 11, (3, 3), 1, 2, 2, 1, 0.8),
    (3, 8, 12, 10, 7, (3, 5), 2, 2, 2, 2, ("mask", 0.4)),
    (2, 6, 12, 7, 9, (3, 3), 2, 1, 1, 6, ("mask", 0.5)),  # depthwise multiplier 2, stride 2
    (1, 5, 7, 5, 6, (1, 1), 1, 0, 1, 1, ("mask", 0.6)),
    (2, 13, 17, 13, 15, (2, 3), 3, 3, 1, 1, ("mask", 0.3)),
    (2, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 1.0),    # fully pruned
    (0, 8, 16, 9, 11, (3, 3), 1, 1, 1, 1, 0.6),    # empty batch
    (3, 40, 24, 15, 13, (3, 3), 1, 1, 1, 1, 0.8),  # several input-channel blocks
    (2, 24, 40, 13, 9, (3, 3), 2, 1, 1, 1, 0.6),   # several output-channel blocks (grad-input)
    (1, 4, 8, 6, 5, (5, 5), 1, 4, 1, 2, ("mask", 0.5)),  # padding beyond the kernel reach
    (2, 4, 6, 12, 11, (7, 7), 1, 3, 1, 1, ("mask", 0.3)),
    (2, 4, 6, 12, 11, (7, 7), 2, 3, 1, 1, 0.9),
    (2, 8, 12, 12, 10, (3, 3), (2, 1), 1, 1, 1, 0.6),
    (2, 8, 12, 9, 12, (3, 3), (1, 2), 0, 1, 1, 0.6),
    (2, 5, 9, 17, 14, (3, 3), 3, 1, 2, 1, ("mask", 0.5)),   # stride 3 with dilation
    (2, 6, 8, 11, 13, (3, 5), 2, (1, 2), 3, 1, ("mask", 0.5)),
    (1, 4, 6, 7, 7, (1, 1), 2, 0, 1, 1, 0.5),      # 1x1 stride 2, kernels dropped
    (9, 16, 16, 7, 7, (3, 3), 1, 1, 1, 1, 0.6),    # small images, many of them
    # patterns of up to 9 taps, split into groups of at most 4
    (2, 136, 136, 6, 5, (3, 3), 1, 1, 1, 1, ("mask", 0.5)),
    # rows in several blocks of the grouped sweeps (forward: output channels,
    # grad-input: input channels; 2-5 blocks of 64-128 rows)
    (1, 300, 300, 5, 4, (3, 3), 1, 1, 1, 1, 0.5556),
    (1, 280, 600, 7, 6, (3, 3), 2, 1, 1, 2, 0.6),
]


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def make_format(weight, how, groups, seed=0):
    if isinstance(how, tuple):
        gen = torch.Generator().manual_seed(seed + 1)
        mask = torch.rand(weight.shape, generator=gen) < how[1]
        return Pattern.from_mask(weight, mask, groups)
    return Pattern.from_dense(weight, how, "random", groups, seed)


def _make(case, dtype, seed=0):
    n, cin, cout, h, w, k, s, p, d, g, how = case
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(cout, cin // g, *k, generator=gen, dtype=dtype)
    fmt = make_format(weight, how, g, seed)
    x = torch.randn(n, cin, h, w, generator=gen, dtype=dtype)
    bias = torch.randn(cout, generator=gen, dtype=dtype)
    conv = ConvArgs(_pair(s), _pair(p), _pair(d), g)
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


def _case_id(c):
    how = c[10] if not isinstance(c[10], tuple) else f"mask{c[10][1]}"
    return "x".join(map(str, c[:5])) + f"-k{c[5]}s{c[6]}p{c[7]}d{c[8]}g{c[9]}-{how}"


@pytest.mark.parametrize("simd", ["best", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_passes_match_dense(case, dtype, simd, monkeypatch):
    from sparsekernels.ops import pattern_native as native

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
    # no bias: output channels without a kernel are exactly 0
    out = native.forward(x, fmt.values, topo, None, conv)
    torch.testing.assert_close(out.double(), F.conv2d(x.double(), wd, None, *args), **_tol(dtype))


@pytest.mark.parametrize("simd", ["best", "generic"])
def test_outputs_are_fully_overwritten(simd, monkeypatch):
    """Freshly allocated outputs full of garbage (NaN-poisoned memory) never
    leak: each pass runs twice after poisoning the allocator's blocks."""
    from sparsekernels.ops import pattern_native as native

    if simd == "generic":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", "generic")
    fmt, x, bias, conv = _make(CASES[10], torch.float32)
    topo = fmt.topology()
    go = torch.randn(3, 24, 15, 13)
    results = []
    for _ in range(2):
        for shape in ((3, 24, 15, 13), (3, 40, 15, 13), (fmt.values.numel(),)):
            torch.empty(shape).fill_(float("nan"))  # recycle NaN-filled blocks
        results.append((native.forward(x, fmt.values, topo, bias, conv),
                        native.grad_input(go, fmt.values, topo, conv, (15, 13)),
                        native.grad_weight(x, go, topo, conv)))
    for r in results[0]:
        assert torch.isfinite(r).all()
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("simd", ["best", "generic"])
def test_nan_at_pruned_positions_never_reaches_the_output(simd, monkeypatch):
    from sparsekernels import pattern_conv2d

    if simd == "generic":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", "generic")
    # one input channel no kept kernel reads: NaN there must not matter
    weight = torch.randn(8, 6, 3, 3)
    mask = torch.rand(weight.shape, generator=torch.Generator().manual_seed(3)) < 0.5
    mask[:, 2] = False
    fmt = Pattern.from_mask(weight, mask)
    x = torch.randn(2, 6, 9, 9)
    x[:, 2] = float("nan")
    out = pattern_conv2d(x, fmt, padding=1, backend="cpu")
    assert torch.isfinite(out).all()
    ref = F.conv2d(x.nan_to_num(0.0).double(), fmt.to_dense().double(), padding=1)
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)
    # a NaN at one pixel only reaches the pixels a kept tap connects
    x = torch.randn(1, 6, 9, 9)
    mask = torch.zeros(weight.shape, dtype=torch.bool)
    mask[:, :, 1, 1] = True  # centre only: a 1x1 conv in a 3x3 kernel
    fmt = Pattern.from_mask(weight, mask)
    x[0, 0, 4, 4] = float("nan")
    out = pattern_conv2d(x, fmt, padding=1, backend="cpu")
    assert torch.isnan(out[0, :, 4, 4]).all()
    finite = torch.ones(9, 9, dtype=torch.bool)
    finite[4, 4] = False
    assert torch.isfinite(out[0][:, finite]).all()


def test_gradcheck_float64():
    """Through the custom op (what pattern_conv2d's autograd runs), every input."""
    gen = torch.Generator().manual_seed(0)
    for stride, groups, how in ((1, 1, 0.6), (2, 2, ("mask", 0.5))):
        weight = torch.randn(4, 4 // groups, 3, 3, generator=gen, dtype=torch.float64)
        fmt = make_format(weight, how, groups)
        tensors, meta = fmt.topology().as_op_args()
        x = torch.randn(2, 4, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
        values = fmt.values.clone().requires_grad_(True)
        bias = torch.randn(4, generator=gen, dtype=torch.float64, requires_grad=True)

        def f(x, values, bias):
            return torch.ops.sparsekernels.pattern_conv2d(
                x, values, tensors, meta, bias, stride=[stride] * 2, padding=[1, 1],
                dilation=[1, 1], groups=groups, backend="cpu")

        assert torch.autograd.gradcheck(f, (x, values, bias), fast_mode=True)


def test_half_precision_runs_in_float32():
    from sparsekernels.ops import pattern_native as native

    fmt, x, bias, conv = _make(CASES[0], torch.float32)
    topo = fmt.topology()
    for dt in (torch.float16, torch.bfloat16):
        out = native.forward(x.to(dt), fmt.values.to(dt), topo, bias.to(dt), conv)
        assert out.dtype == dt
        ref = F.conv2d(x.to(dt).double(), fmt.to_dense().to(dt).double(),
                       bias.to(dt).double(), conv.stride, conv.padding)
        torch.testing.assert_close(out.double(), ref, rtol=3e-2, atol=3e-2)


def test_results_do_not_depend_on_threads():
    fmt, x, bias, conv = _make(CASES[10], torch.float64)
    topo = fmt.topology()
    t = [getattr(topo, f) for f in TOPO]
    go = torch.randn(3, 24, 15, 13, dtype=torch.float64)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            outs.append((C.pattern_forward(x, fmt.values, *t, bias, 24, 3, 3, [1, 1], [1, 1],
                                           [1, 1], 1, *NO_CLAMP, None),
                         C.pattern_grad_input(go, fmt.values, *t, 40, 15, 13, 3, 3, [1, 1],
                                              [1, 1], [1, 1], 1),
                         C.pattern_grad_weight(x, go, *t, 3, 3, [1, 1], [1, 1], [1, 1], 1)))
    finally:
        torch.set_num_threads(before)
    for o in outs[1:]:
        for a, b in zip(outs[0], o):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# ---- argument checks ------------------------------------------------------

def _fwd_args():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(16, 4, 3, 3, generator=gen)
    fmt = Pattern.from_dense(weight, 0.7, "random", 2, 0)
    x = torch.randn(2, 8, 9, 11, generator=gen)
    bias = torch.randn(16, generator=gen)
    topo = fmt.topology()
    t = {f: getattr(topo, f).clone() for f in TOPO}
    return fmt, x, bias, t


def _call_forward(x, values, t, bias=None, cout=16, k=(3, 3), groups=2):
    return C.pattern_forward(x, values, *[t[f] for f in TOPO], bias, cout, *k, [1, 1], [1, 1],
                             [1, 1], groups, *NO_CLAMP, None)


def _row_with(t, count):
    rp = t["row_ptr"]
    return next(r for r in range(len(rp) - 1) if rp[r + 1] - rp[r] >= count)


def test_valid_arguments_pass():
    fmt, x, bias, t = _fwd_args()
    _call_forward(x, fmt.values, t, bias)
    C.pattern_check_topology(*[t[f] for f in TOPO], 16, 8, 3, 3, 2)


def _swap_chans(t):
    j = int(t["row_ptr"][_row_with(t, 2)])
    t["chan_idx"][[j, j + 1]] = t["chan_idx"][[j + 1, j]].clone()


def _flip_kernel_idx(t):
    t["kernel_idx"][:2] = t["kernel_idx"][:2].flip(0).clone()


BAD_TOPOLOGIES = [
    (lambda t: t["pattern_idx"].__setitem__(3, 9),
     r"pattern_idx: entry 3 = 9 is out of range \[0, 8\) \(patterns in the library\)"),
    (lambda t: t["pattern_idx"].__setitem__(0, -1), r"pattern_idx: entry 0 = -1 is out of range"),
    (lambda t: t["pattern_taps"].__setitem__(1, 9),
     r"pattern_taps: entry 1 = 9 is out of range \[0, 9\) \(kernel positions Kh\*Kw\)"),
    (lambda t: t["pattern_taps"].__setitem__(slice(0, 2), t["pattern_taps"][:2].flip(0).clone()),
     r"pattern_taps: not strictly increasing within row 0"),
    (lambda t: t.__setitem__("pattern_ptr", torch.cat([t["pattern_ptr"], t["pattern_ptr"][-1:]])),
     r"pattern_taps: pattern 8 is empty"),
    (lambda t: t["pattern_ptr"].__setitem__(0, 1), r"pattern_ptr: must start at 0"),
    (lambda t: t["pattern_ptr"].__setitem__(-1, 3), r"pattern_ptr: (must end at nnz|decreases)"),
    (lambda t: t["chan_idx"].__setitem__(3, 4),
     r"chan_idx: entry 3 = 4 is out of range \[0, 4\) \(input channels per group\)"),
    (_swap_chans, r"chan_idx: not strictly increasing"),
    (lambda t: t["row_ptr"].__setitem__(0, 1), r"row_ptr: must start at 0"),
    (lambda t: t["row_ptr"].__setitem__(-1, 0), r"row_ptr: (must end at nnz|decreases)"),
    (lambda t: t["value_ptr"].__setitem__(1, 3), r"value_ptr: not the value layout"),
    (lambda t: t["value_ptr"].__setitem__(0, 1), r"value_ptr: not the value layout"),
    (lambda t: t["value_tap"].__setitem__(2, (int(t["value_tap"][2]) + 1) % 9),
     r"value_tap: entry 2 = \d is not tap"),
    (_flip_kernel_idx, r"col_ptr/kernel_idx/kernel_row: not the transpose of row_ptr/chan_idx"),
    (lambda t: t["kernel_row"].__setitem__(0, 15), r"col_ptr/kernel_idx/kernel_row: not the "
                                                   r"transpose"),
    (lambda t: t["kernel_idx"].__setitem__(0, 10**6), r"col_ptr/kernel_idx/kernel_row: not the "
                                                      r"transpose"),
    (lambda t: t["col_ptr"].__setitem__(1, 0), r"col_ptr/kernel_idx/kernel_row: not the "
                                               r"transpose"),
    (lambda t: t["col_ptr"].__setitem__(-1, 10**6), r"col_ptr/kernel_idx/kernel_row: not the "
                                                    r"transpose"),
]


@pytest.mark.parametrize("edit, match", BAD_TOPOLOGIES, ids=[m for _, m in BAD_TOPOLOGIES])
def test_bad_topology_is_a_value_error(edit, match):
    fmt, x, bias, t = _fwd_args()
    edit(t)
    go = torch.randn(2, 16, 9, 11)
    tt = [t[f] for f in TOPO]
    with pytest.raises(ValueError, match=match):
        _call_forward(x, fmt.values, t, bias)
    with pytest.raises(ValueError, match=match):
        C.pattern_check_topology(*tt, 16, 8, 3, 3, 2)
    with pytest.raises(ValueError, match=match):
        C.pattern_grad_input(go, fmt.values, *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=match):
        C.pattern_grad_weight(x, go, *tt, 3, 3, [1, 1], [1, 1], [1, 1], 2)


@pytest.mark.parametrize("field", TOPO)
def test_wrong_length_names_the_field(field):
    fmt, x, bias, t = _fwd_args()
    t[field] = torch.cat([t[field], t[field][-1:]])
    # a longer pattern_taps / chan_idx is a longer CSR: its pointer then ends short of it;
    # a longer pattern_ptr is one more pattern (ending past pattern_taps)
    name = {"pattern_taps": "pattern_ptr: must end at nnz",
            "pattern_ptr": "pattern_taps: pattern 8 is empty",
            "chan_idx": "row_ptr: must end at nnz"}.get(field, f"{field}: expected shape")
    with pytest.raises(ValueError, match=name):
        _call_forward(x, fmt.values, t, bias)


@pytest.mark.parametrize("field", TOPO)
def test_wrong_index_dtype_is_a_type_error(field):
    fmt, x, bias, t = _fwd_args()
    t[field] = t[field].long()
    with pytest.raises(TypeError, match=rf"{field}: expected dtype torch.int32"):
        _call_forward(x, fmt.values, t, bias)


def test_index_tensors_of_other_ranks_or_layouts():
    fmt, x, bias, t = _fwd_args()
    t2 = dict(t, pattern_ptr=t["pattern_ptr"][None])
    with pytest.raises(ValueError, match=r"pattern_ptr: expected a 1-D tensor"):
        _call_forward(x, fmt.values, t2, bias)
    t2 = dict(t, value_tap=t["value_tap"].repeat_interleave(2)[::2])
    with pytest.raises(ValueError, match=r"value_tap: expected a contiguous tensor"):
        _call_forward(x, fmt.values, t2, bias)
    t2 = dict(t, pattern_ptr=t["pattern_ptr"][:1].clone())
    with pytest.raises(ValueError, match=r"pattern_ptr: expected at least one pattern"):
        _call_forward(x, fmt.values, t2, bias)
    if torch.device("meta"):
        t2 = dict(t, kernel_row=t["kernel_row"].to("meta"))
        with pytest.raises(ValueError, match=r"kernel_row: expected a tensor on cpu"):
            _call_forward(x, fmt.values, t2, bias)


def test_huge_sizes_are_refused():
    fmt, x, bias, t = _fwd_args()
    tt = [t[f] for f in TOPO]
    with pytest.raises(ValueError, match=r"does not fit the int32 topology indices"):
        C.pattern_check_topology(*tt, 2**16, 2**16, 3, 3, 1)
    with pytest.raises(ValueError, match=r"kernel height: expected an integer"):
        C.pattern_check_topology(*tt, 16, 8, 2**31, 3, 2)
    with pytest.raises(ValueError, match=r"out_channels: expected an integer"):
        C.pattern_check_topology(*tt, 2**40, 8, 3, 3, 2)


def test_bad_values_bias_and_shapes():
    fmt, x, bias, t = _fwd_args()
    with pytest.raises(TypeError, match=r"values: expected dtype"):
        _call_forward(x, fmt.values.double(), t, bias)
    with pytest.raises(ValueError, match=r"values: expected shape \[nnz values="):
        _call_forward(x, fmt.values[:-1], t, bias)
    with pytest.raises(ValueError, match=r"values: expected shape \[nnz values="):
        _call_forward(x, fmt.values[None], t, bias)
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
        C.pattern_check_topology(*[t[f] for f in TOPO], 18, 8, 3, 3, 2)
    with pytest.raises(TypeError, match=r"expected dtype|not implemented for 'Int'"):
        _call_forward(x.int(), fmt.values, t, bias)
    # a 5x5 conv with this 3x3 topology: taps stay in range but the layout is other
    with pytest.raises(ValueError, match=r"chan_idx|pattern|value|col_ptr|row_ptr"):
        C.pattern_check_topology(*[t[f] for f in TOPO], 16, 16, 3, 3, 2)


def test_grad_argument_checks():
    fmt, x, bias, t = _fwd_args()
    tt = [t[f] for f in TOPO]
    go = torch.randn(2, 16, 9, 11)
    with pytest.raises(ValueError, match=r"grad_out: spatial size"):
        C.pattern_grad_input(go[..., :5], fmt.values, *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1],
                             [1, 1], 2)
    with pytest.raises(ValueError, match=r"values: expected shape"):
        C.pattern_grad_input(go, fmt.values[:-1], *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1], [1, 1],
                             2)
    with pytest.raises(ValueError, match=r"grad_out: shape"):
        C.pattern_grad_weight(x, go[:1], *tt, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(TypeError, match=r"grad_out: expected dtype"):
        C.pattern_grad_weight(x, go.double(), *tt, 3, 3, [1, 1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=r"stride: expected 2 entries"):
        C.pattern_grad_weight(x, go, *tt, 3, 3, [1], [1, 1], [1, 1], 2)
    with pytest.raises(ValueError, match=r"col_ptr/kernel_idx/kernel_row: not the transpose"):
        # groups=1 reads the same CSR with other columns: the transposed view no longer fits
        C.pattern_grad_input(go, fmt.values, *tt, 8, 9, 11, 3, 3, [1, 1], [1, 1], [1, 1], 1)


# The bindings cache validated topologies (by contents) and the forward's
# weight-plan offsets (by validated topology); weights are gathered per call.
@pytest.mark.parametrize("simd", ["best", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_calls_with_changed_values_match_dense(dtype, simd, monkeypatch):
    from sparsekernels.ops import pattern_native as native

    if simd == "generic":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", "generic")
    gen = torch.Generator().manual_seed(3)
    layers = [_make(CASES[0], dtype, seed=3), _make(CASES[10], dtype, seed=4)]
    for step in range(4):
        for fmt, x, bias, conv in layers:  # alternate topologies: both stay cached
            with torch.no_grad():  # an optimizer step: values change in place
                fmt.values.copy_(torch.randn(fmt.values.shape, generator=gen, dtype=dtype))
            args = (conv.stride, conv.padding, conv.dilation, conv.groups)
            wd = fmt.to_dense().double()
            topo = fmt.topology()
            # same images, then another batch and size (another plan geometry)
            for xi in (x, torch.randn(x.shape[0] + 1, x.shape[1], x.shape[2] + 2, x.shape[3] + 1,
                                      generator=gen, dtype=dtype)):
                out = native.forward(xi, fmt.values, topo, bias, conv)
                ref = F.conv2d(xi.double(), wd, bias.double(), *args)
                torch.testing.assert_close(out.double(), ref, **_tol(dtype))
                go = torch.randn(ref.shape, generator=gen, dtype=dtype)
                gi = native.grad_input(go, fmt.values, topo, conv, xi.shape[2:])
                gi_ref = torch.nn.grad.conv2d_input(xi.shape, wd, go.double(), *args)
                torch.testing.assert_close(gi.double(), gi_ref, **_tol(dtype))


def test_many_layers_in_turn_through_the_caches():
    """A network calls its layers in turn: 40 topologies (more than a small
    cache holds), each called twice around the others, forward and
    grad-input, every result against float64 (hits and misses alike)."""
    from sparsekernels.ops import pattern_native as native

    conv = ConvArgs((1, 1), (1, 1), (1, 1), 1)
    layers = []
    for i in range(40):
        gen = torch.Generator().manual_seed(100 + i)
        w = torch.randn(6 + i % 5, 4 + i % 3, 3, 3, generator=gen)
        fmt = Pattern.from_dense(w, 0.6, "random", 1, i)
        x = torch.randn(2, w.shape[1], 6, 5, generator=gen)
        layers.append((fmt, fmt.topology(), x))
    for _ in range(2):
        for fmt, topo, x in layers:
            wd = fmt.to_dense().double()
            out = native.forward(x, fmt.values, topo, None, conv)
            torch.testing.assert_close(out.double(), F.conv2d(x.double(), wd, padding=1),
                                       rtol=1e-4, atol=1e-4)
            gi = native.grad_input(out, fmt.values, topo, conv, x.shape[2:])
            gi_ref = torch.nn.grad.conv2d_input(x.shape, wd, out.double(), padding=1)
            torch.testing.assert_close(gi.double(), gi_ref, rtol=1e-4, atol=1e-4)


def test_topology_edited_in_place_between_calls_is_rechecked():
    fmt, x, bias, t = _fwd_args()
    ref = _call_forward(x, fmt.values, t, bias)
    _call_forward(x, fmt.values, t, bias)  # cached now
    saved = int(t["pattern_idx"][0])
    t["pattern_idx"][0] = 99
    with pytest.raises(ValueError, match="pattern_idx: entry 0 = 99 is out of range"):
        _call_forward(x, fmt.values, t, bias)
    with pytest.raises(ValueError, match="pattern_idx: entry 0 = 99 is out of range"):
        C.pattern_check_topology(*[t[f] for f in TOPO], 16, 8, 3, 3, 2)
    # a write the version counter does not see (.data, a numpy view) is caught too
    t["pattern_idx"][0] = saved
    torch.testing.assert_close(_call_forward(x, fmt.values, t, bias), ref)
    t["value_tap"].data[0] = 100
    with pytest.raises(ValueError, match="value_tap"):
        _call_forward(x, fmt.values, t, bias)
    t["value_tap"].data[0] = fmt.topology().value_tap[0]
    torch.testing.assert_close(_call_forward(x, fmt.values, t, bias), ref)
    t["kernel_idx"].numpy()[0] = 10**6
    with pytest.raises(ValueError, match="kernel_idx"):
        _call_forward(x, fmt.values, t, bias)


# Grad-input and grad-weight cache their weight-free plans too (grad-input's
# per validated topology and geometry, weights gathered per call; grad-weight's
# shared with the forward's when the geometry is the same).
@pytest.mark.parametrize("simd", ["best", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_repeated_grad_calls_with_changed_values_match_dense(dtype, simd, monkeypatch):
    from sparsekernels.ops import pattern_native as native

    if simd == "generic":
        monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", "generic")
    gen = torch.Generator().manual_seed(5)
    layers = [_make(CASES[11], dtype, seed=5), _make(CASES[4], dtype, seed=6),
              _make(CASES[10], dtype, seed=7)]
    for step in range(4):
        for fmt, x, bias, conv in layers:  # alternate topologies: all stay cached
            with torch.no_grad():  # an optimizer step: values change in place
                fmt.values.copy_(torch.randn(fmt.values.shape, generator=gen, dtype=dtype))
            args = (conv.stride, conv.padding, conv.dilation, conv.groups)
            wd = fmt.to_dense().double()
            topo = fmt.topology()
            # same images, then another batch and size (another plan geometry)
            for xi in (x, torch.randn(x.shape[0] + 1, x.shape[1], x.shape[2] + 3, x.shape[3] + 2,
                                      generator=gen, dtype=dtype)):
                with torch.no_grad():
                    xi.copy_(torch.randn(xi.shape, generator=gen, dtype=dtype))
                shape = F.conv2d(xi.double(), wd, None, *args).shape
                go = torch.randn(shape, generator=gen, dtype=dtype)
                if step % 2:  # the forward first: grad-weight finds its plan cached
                    out = native.forward(xi, fmt.values, topo, bias, conv)
                    ref = F.conv2d(xi.double(), wd, bias.double(), *args)
                    torch.testing.assert_close(out.double(), ref, **_tol(dtype))
                gw = native.grad_weight(xi, go, topo, conv)
                gw_ref = fmt.gather(torch.nn.grad.conv2d_weight(xi.double(), wd.shape,
                                                                go.double(), *args))
                torch.testing.assert_close(gw.double(), gw_ref, **_tol(dtype))
                gi = native.grad_input(go, fmt.values, topo, conv, xi.shape[2:])
                gi_ref = torch.nn.grad.conv2d_input(xi.shape, wd, go.double(), *args)
                torch.testing.assert_close(gi.double(), gi_ref, **_tol(dtype))


def test_topology_edited_in_place_after_cached_grad_calls_is_rechecked():
    fmt, x, bias, t = _fwd_args()
    go = torch.randn(2, 16, 9, 11, generator=torch.Generator().manual_seed(1))

    def gin():
        return C.pattern_grad_input(go, fmt.values, *[t[f] for f in TOPO], 8, 9, 11, 3, 3,
                                    [1, 1], [1, 1], [1, 1], 2)

    def gw():
        return C.pattern_grad_weight(x, go, *[t[f] for f in TOPO], 3, 3, [1, 1], [1, 1],
                                     [1, 1], 2)

    gi_ref, gw_ref = gin(), gw()
    gin(), gw()  # cached now
    fresh = fmt.topology()
    edits = [  # (field, how the entry is written, value, message)
        ("pattern_idx", "index", 99, "pattern_idx: entry 0 = 99 is out of range"),
        ("kernel_idx", "index", 10**6, "kernel_idx"),
        ("kernel_row", "data", -3, "kernel_row"),
        ("value_tap", "data", 100, "value_tap"),
        ("chan_idx", "numpy", 10**6, "chan_idx"),
        ("col_ptr", "numpy", 10**6, "col_ptr"),
    ]
    for field, how, value, match in edits:
        target = {"index": t[field], "data": t[field].data, "numpy": t[field].numpy()}[how]
        target[0 if field != "col_ptr" else 1] = value
        for run in (gin, gw):
            with pytest.raises(ValueError, match=match):
                run()
        t[field].copy_(getattr(fresh, field))  # restored: the cached plans are right again
        torch.testing.assert_close(gin(), gi_ref)
        torch.testing.assert_close(gw(), gw_ref)
    with torch.no_grad():  # new weights, same topology: grad-input follows them
        fmt.values.mul_(-2)
    torch.testing.assert_close(gin(), -2 * gi_ref)
