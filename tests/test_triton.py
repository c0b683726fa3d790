"""Every registered kind's Triton kernels (forward, grad-input, grad-weight),
called directly, against dense float64 F.conv2d and its autograd on the
decoded weight (sparsekernels.testing's oracle).

Without CUDA the kernels run under the Triton interpreter (CPU), so shapes
are small; every case still crosses tile edges somewhere (short 1xN rows,
more pixels than one pixel tile, Cin/g above a K chunk). conftest.py fills
every fresh tensor with NaN, so an output element a kernel forgets to write
fails the comparison.
"""
import importlib
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede importing triton

triton = pytest.importorskip("triton")

import torch.nn.functional as F  # noqa: E402

from sparsekernels.conv_args import ConvArgs  # noqa: E402
from sparsekernels.kinds import KINDS  # noqa: E402
from sparsekernels.ops.sparse_conv import channels_last_like  # noqa: E402
from sparsekernels.testing import (  # noqa: E402
    low_precision_budget, make_case, reference_grads, reference_output,
)

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
DEVICE = "cpu" if INTERPRET else "cuda"
PASSES = ("forward", "grad_input", "grad_weight")


def _backend(kind: str):
    """The kind's Triton module: sparsekernels/triton/<slug>.py."""
    return importlib.import_module(f"sparsekernels.triton.{kind}")


# Geometry for every kind, plus (under "params") a kind's own parameters; a
# case naming "kinds" runs only for those. make_case's defaults: batch 2,
# cin 6, cout 10, 7x9 image, 3x3 kernel, padding 1, sparsity 0.5, bias.
CASES = {
    # 1xN, N=4: rows of 4, 4, 2 output channels, a short last row
    "odd_hw_short_row": {},
    "stride2_pad0_dense": dict(cout=16, stride=2, padding=0, sparsity=0.0, bias=False,
                               params={"block1xn": {"n": 8}}),
    "pad2_dil2_groups2": dict(cin=4, cout=12, groups=2, padding=2, dilation=2),
    "k1x3_stride2x1": dict(cout=5, kernel=(1, 3), stride=(2, 1), padding=(0, 1),
                           params={"block1xn": {"n": 1}}),
    "k5_short_row": dict(cout=20, hw=(5, 6), kernel=(5, 5), padding=2,
                         params={"block1xn": {"n": 16}}),
    "fully_pruned_bias": dict(sparsity=1.0),
    "fully_pruned_no_bias": dict(sparsity=1.0, bias=False),
    "empty_batch": dict(batch=0),
    "channels_last_groups2": dict(cout=8, groups=2, stride=2, channels_last=True),
    "noncontiguous": dict(cout=12, bias=False, noncontiguous=True,
                          params={"block1xn": {"n": 8}}),
    # 1xN, N=64: a short last row (6 lanes), two lane chunks per tap in
    # grad-input, grad-weight split over pixels with a ragged last split
    "n64_split_pixels": dict(batch=3, cin=3, cout=70, hw=(9, 11), kinds=("block1xn",),
                             params={"block1xn": {"n": 64}}),
    # 1xN grad-weight's shift form (3x3, stride 1, N <= 32, rows keeping 24+
    # blocks): split over the input pixels with a ragged last split, and x /
    # grad_out channels_last
    "n32_split_input_pixels": dict(batch=3, cin=64, cout=40, hw=(9, 11), kinds=("block1xn",),
                                   params={"block1xn": {"n": 32}}),
    "channels_last_stride1": dict(cin=64, cout=8, sparsity=0.3, channels_last=True,
                                  kinds=("block1xn",)),
    # stripe: rows without any stripe, depthwise, several channel tiles and K chunks
    "rows_without_stripes": dict(sparsity=0.85, cout=12, kinds=("stripe",)),
    # stripe, pattern: depthwise, several channel tiles and K chunks
    "depthwise_x2": dict(cin=6, cout=12, groups=6, hw=(4, 5), kinds=("stripe", "pattern")),
    "wide": dict(cin=20, cout=36, hw=(4, 5), sparsity=0.3, kinds=("stripe", "pattern")),
    # pattern: most kernels dropped (rows and whole channel chunks without one)
    "dropped_kernels": dict(sparsity=0.9, cin=20, cout=12, hw=(4, 5), kinds=("pattern",)),
}
PARAMS = [(k, c) for c, spec in CASES.items() for k in KINDS if k in spec.get("kinds", KINDS)]
IDS = [f"{k}-{c}" for k, c in PARAMS]

BF16_SKIP = "bf16 tl.dot returns garbage under the Triton interpreter; runs on a GPU"
DTYPES = [
    pytest.param(torch.float32, id="fp32"),
    pytest.param(torch.float16, id="fp16"),
    pytest.param(torch.bfloat16, id="bf16",
                 marks=pytest.mark.skipif(INTERPRET, reason=BF16_SKIP)),
]


def _case(kind, name, dtype, seed=0):
    spec = {k: v for k, v in CASES[name].items() if k != "kinds"}
    params = spec.pop("params", {}).get(kind, {})
    return make_case(kind=kind, dtype=dtype, device=DEVICE, seed=seed, **spec, **params)


def _conv(case) -> ConvArgs:
    return ConvArgs(case.stride, case.padding, case.dilation, case.groups)


def _grad_out(case, name, seed=1) -> torch.Tensor:
    """A random output gradient in the case's dtype, laid out like its input."""
    shape = reference_output(case).shape
    g = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    g = g.to(DEVICE, case.x.dtype)
    if CASES[name].get("channels_last"):
        g = g.contiguous(memory_format=torch.channels_last)
    if CASES[name].get("noncontiguous"):  # every other column of a wider tensor
        wide = torch.zeros(*shape[:3], 2 * shape[3], dtype=g.dtype, device=g.device)
        wide[..., ::2] = g
        g = wide[..., ::2]
    return g


def _run(kind, pass_, case, go):
    mod, topo, values = _backend(kind), case.weight.topology(), case.weight.values
    if pass_ == "forward":
        return mod.forward(case.x, values, topo, case.bias, _conv(case))
    if pass_ == "grad_input":
        return mod.grad_input(go, values, topo, _conv(case), tuple(case.x.shape[2:]))
    return mod.grad_weight(case.x, go, topo, _conv(case))


def _references(case, go) -> dict:
    """float64 oracle of each pass, on the case's (already rounded) operands."""
    gx, gv, _ = reference_grads(case, go.double())
    return {"forward": reference_output(case), "grad_input": gx, "grad_weight": gv}


def _torch_grads_error(case, go, pass_, ref) -> float:
    """Max error of PyTorch's fp32 gradient rounded to the case's dtype: how
    close a correct low-precision backward can be expected to get."""
    x = case.x.detach().float().requires_grad_()
    w = case.weight.to_dense().detach().float().requires_grad_()
    out = F.conv2d(x, w, None, case.stride, case.padding, case.dilation, case.groups)
    gx, gw = torch.autograd.grad(out, (x, w), go.float())
    got = gx if pass_ == "grad_input" else case.weight.gather(gw)
    return _max_err(got.to(case.x.dtype), ref)


def _max_err(a, b) -> float:
    return (a.double().cpu() - b.double().cpu()).abs().max().item() if a.numel() else 0.0


def _bound(case, go, pass_, ref) -> float:
    dtype = case.x.dtype
    scale = max(1.0, ref.abs().max().item() if ref.numel() else 0.0)
    if dtype == torch.float64:
        return 1e-12 * scale
    if dtype == torch.float32:
        return 1e-5 * scale
    if pass_ == "forward":
        return low_precision_budget(case, dtype)
    return max(2 * _torch_grads_error(case, go, pass_, ref), 4 * torch.finfo(dtype).eps * scale)


def _check_passes(kind, name, case):
    go = _grad_out(case, name)
    refs = _references(case, go)
    for pass_ in PASSES:
        got, ref = _run(kind, pass_, case, go), refs[pass_]
        assert got.shape == ref.shape and got.dtype == case.x.dtype, pass_
        if pass_ == "grad_input":
            assert got.is_contiguous(), pass_
        elif pass_ == "forward":  # NCHW, or channels_last like its input (the op's layout)
            assert got.is_contiguous() or (channels_last_like(case.x) and got.is_contiguous(
                memory_format=torch.channels_last)), pass_
        err, bound = _max_err(got, ref), _bound(case, go, pass_, ref)
        assert err <= bound, f"{pass_}: max error {err:.3g} > bound {bound:.3g}"  # NaN fails too


# ---- tests ------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind,name", PARAMS, ids=IDS)
def test_passes(kind, name, dtype):
    _check_passes(kind, name, _case(kind, name, dtype))


@pytest.mark.parametrize("kind,name", [(k, c) for k, c in PARAMS
                                       if c in ("odd_hw_short_row", "pad2_dil2_groups2")])
def test_float64(kind, name):
    _check_passes(kind, name, _case(kind, name, torch.float64, seed=1))


@pytest.mark.parametrize("kind", KINDS)
def test_weight_gradient_is_exactly_zero_off_the_kept_entries(kind):
    """Entries of ``values`` that are no weight (1xN's padded lanes of a
    short last row) get a gradient of exactly 0, whatever the kind."""
    case = _case(kind, "odd_hw_short_row", torch.float32)
    gw = _run(kind, "grad_weight", case, _grad_out(case, "odd_hw_short_row"))
    off = case.weight.gather(torch.ones(case.weight.shape, device=DEVICE)) == 0
    assert (gw[off] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic(kind):
    """No atomics: the same call twice gives bitwise the same results."""
    case = _case(kind, "k1x3_stride2x1", torch.float32)
    go = _grad_out(case, "k1x3_stride2x1")
    for pass_ in PASSES:
        assert torch.equal(_run(kind, pass_, case, go), _run(kind, pass_, case, go)), pass_


@pytest.mark.parametrize("kind", KINDS)
def test_rejects_unsupported_and_mismatched_dtypes(kind):
    mod, case = _backend(kind), _case(kind, "odd_hw_short_row", torch.float32)
    topo, values, conv = case.weight.topology(), case.weight.values, _conv(case)
    go = _grad_out(case, "odd_hw_short_row")
    with pytest.raises(TypeError, match="torch.int32"):
        mod.forward(case.x.to(torch.int32), values, topo, case.bias, conv)
    with pytest.raises(TypeError, match="torch.float16"):
        mod.grad_input(go.half(), values, topo, conv, tuple(case.x.shape[2:]))
    with pytest.raises(TypeError, match="torch.float16"):
        mod.grad_weight(case.x, go.half(), topo, conv)


# ---- pattern: libraries of mixed sizes; every kind: NaN/Inf inputs ------------
def _pattern_case(name, dtype, library, seed=0, **spec):
    """A pattern case whose weight keeps, per kernel, a pattern of ``library``
    (bool ``[P, Kh, Kw]``) drawn at random, or is dropped (id -1)."""
    case = make_case(kind="pattern", dtype=dtype, device=DEVICE, seed=seed, **spec)
    shape = case.weight.shape
    gen = torch.Generator().manual_seed(seed + 7)
    ids = torch.randint(-1, library.shape[0], shape[:2], generator=gen)
    w = torch.rand(shape, generator=gen, dtype=torch.float64) - 0.5
    fmt = KINDS["pattern"].format.from_ids(w, library, ids, groups=case.groups)
    return case._replace(weight=fmt.to(DEVICE, dtype))


def _library(kernel, taps_per_pattern):
    lib = torch.zeros(len(taps_per_pattern), kernel[0] * kernel[1], dtype=torch.bool)
    for p, taps in enumerate(taps_per_pattern):
        lib[p, list(taps)] = True
    return lib.reshape(-1, *kernel)


MIXED = {  # patterns of 1, 2, 4 and all 9 / 15 positions in one library
    "k3": dict(kernel=(3, 3), library=[(4,), (0, 8), (1, 3, 4, 5), range(9)]),
    "k5x3_stride2_groups2": dict(kernel=(5, 3), library=[(7,), (0, 14), (2, 6, 7, 9), range(15)],
                                 stride=(2, 1), padding=(2, 1), cin=4, cout=6, groups=2),
}


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"),
                                   pytest.param(torch.float16, id="fp16")])
@pytest.mark.parametrize("name", MIXED)
def test_pattern_library_of_mixed_sizes(name, dtype):
    spec = dict(MIXED[name])
    library = _library(spec["kernel"], spec.pop("library"))
    case = _pattern_case(name, dtype, library, **spec)
    sizes = case.weight.pattern_ptr.diff()[case.weight.pattern_idx.long()]
    assert len(set(sizes.tolist())) > 1  # kernels of different sizes in the layer
    _check_passes("pattern", "odd_hw_short_row", case)


def _nonfinite_case(kind):
    """x with a NaN and an Inf that some rows of a tile read through kept
    weights and others only through pruned ones (1xN: a short last row too)."""
    if kind == "pattern":
        library = _library((3, 3), [(4,), (0, 1), (4, 5, 7, 8)])
        case = _pattern_case("nan", torch.float32, library, seed=3, cout=12, hw=(5, 6))
    else:
        case = make_case(kind=kind, dtype=torch.float32, device=DEVICE, seed=3, hw=(5, 6),
                         cout=10 if kind == "block1xn" else 12)
    x = case.x.clone()
    x[0, 1, 2, 3] = float("nan")
    x[1, 4, 0, 5] = float("inf")
    return case._replace(x=x)


def _dense(case, t):
    """Dense float64 conv of ``t`` by the case's keep mask: > 0 where a kept
    weight meets a marked input."""
    return F.conv2d(t.double(), case.weight.mask().double(), None, case.stride,
                    case.padding, case.dilation, case.groups)


def _assert_nonfinite_exactly_where(got, want_bad, ref_finite):
    bad = ~torch.isfinite(got)
    assert torch.equal(bad.cpu(), want_bad.cpu())
    assert bad.any() and not bad.all()
    err = (got.double()[~bad] - ref_finite[~bad]).abs().max().item()
    assert err <= 1e-5 * max(1.0, ref_finite.abs().max().item()), err


@pytest.mark.parametrize("kind", KINDS)
def test_nonfinite_input_reaches_only_what_kept_weights_read(kind):
    """A NaN/Inf in x (forward, grad-weight) or in grad_out (grad-input) shows
    up exactly where a kept weight meets it: the pruned positions' zeros in
    the dots' tiles never multiply it (and 1xN's padded lanes stay 0)."""
    case = _nonfinite_case(kind)
    bad_x = ~torch.isfinite(case.x)
    clean = case._replace(x=torch.where(bad_x, 0.0, case.x))
    conv = _conv(case)
    mod = _backend(kind)
    topo, values = case.weight.topology(), case.weight.values

    out = mod.forward(case.x, values, topo, case.bias, conv)
    _assert_nonfinite_exactly_where(out, _dense(case, bad_x) > 0, reference_output(clean))

    go = _grad_out(case, "odd_hw_short_row")
    gw = mod.grad_weight(case.x, go, topo, conv)
    reach = torch.nn.grad.conv2d_weight(bad_x.double(), case.weight.shape,
                                        torch.ones_like(go, dtype=torch.float64), case.stride,
                                        case.padding, case.dilation, case.groups)
    _, ref_gw, _ = reference_grads(clean, go.double())
    _assert_nonfinite_exactly_where(gw, case.weight.gather(reach) > 0, ref_gw)

    go = go.clone()
    go[1, 3, 2, 2] = float("nan")
    go[0, 7, 4, 0] = float("-inf")
    bad_go = ~torch.isfinite(go)
    gi = mod.grad_input(go, values, topo, conv, tuple(case.x.shape[2:]))
    reach = torch.nn.grad.conv2d_input(case.x.shape, case.weight.mask().double(),
                                       bad_go.double(), case.stride, case.padding,
                                       case.dilation, case.groups)
    ref_gi, _, _ = reference_grads(clean, torch.where(bad_go, 0.0, go).double())
    _assert_nonfinite_exactly_where(gi, reach > 0, ref_gi)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pass_", PASSES)
def test_grid_axes_1_and_2_stay_within_cudas_limit(kind, pass_, monkeypatch):
    """CUDA caps grid axes 1 and 2 at 65535 (the interpreter does not, so
    this records the grids instead of launching): millions of pixels (here
    batch 4096 at 32x32, 4.2M of them) go on axis 0 at every config."""
    from sparsekernels.triton import common

    grids = []
    monkeypatch.setattr(common._Launcher, "__call__",
                        lambda self, grid, *a, **k: grids.append(
                            (grid, self.configs_for(torch.float16)
                             + self.configs_for(torch.float32))))
    case = make_case(kind=kind, dtype=torch.float32, device=DEVICE, batch=1, cin=2, cout=4,
                     hw=(32, 32), padding=1)
    x = case.x.expand(4096, -1, -1, -1)
    go = reference_output(case).to(case.x.dtype).expand(4096, -1, -1, -1)
    mod, topo, values = _backend(kind), case.weight.topology(), case.weight.values
    if pass_ == "forward":
        mod.forward(x, values, topo, case.bias, _conv(case))
    elif pass_ == "grad_input":
        mod.grad_input(go, values, topo, _conv(case), (32, 32))
    else:
        mod.grad_weight(x, go, topo, _conv(case))
    assert grids
    for grid, configs in grids:
        for cfg in configs:
            shape = grid(cfg.kwargs) if callable(grid) else grid
            assert all(n <= 65535 for n in shape[1:]), (cfg.kwargs, shape)


SHIFT_CASES = ("odd_hw_short_row", "pad2_dil2_groups2", "noncontiguous", "fully_pruned_bias",
               "empty_batch", "n32_split_input_pixels", "channels_last_stride1")


@pytest.mark.parametrize("name,shift", [("n32_split_input_pixels", True), ("channels_last_stride1", True),
                                        ("odd_hw_short_row", False), ("n64_split_pixels", False),
                                        ("stride2_pad0_dense", False), ("k5_short_row", False)])
def test_block1xn_grad_weight_takes_the_shift_form_where_it_applies(name, shift, monkeypatch):
    """3x3, stride 1, N <= 32 and rows keeping 24 blocks on average run the
    shift form; everything else the general kernel."""
    mod = _backend("block1xn")
    taken = []
    for launcher in ("_grad_weight", "_grad_weight_shift"):
        real = getattr(mod, launcher)
        monkeypatch.setattr(mod, launcher, lambda *a, _r=real, _n=launcher, **k: (taken.append(_n), _r(*a, **k)))
    case = _case("block1xn", name, torch.float32)
    mod.grad_weight(case.x, _grad_out(case, name), case.weight.topology(), _conv(case))
    assert taken == ["_grad_weight_shift" if shift else "_grad_weight"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", SHIFT_CASES)
def test_block1xn_grad_weight_shift_form_on_every_stride1_case(name, dtype, monkeypatch):
    """The shift form however few blocks a row keeps (its kept-blocks rule
    off): odd shapes, dilation and groups, strided views, fully pruned rows,
    an empty batch, a split K, channels_last."""
    mod = _backend("block1xn")
    monkeypatch.setattr(mod, "_GW_SHIFT_MIN_KEPT", 0)
    case = _case("block1xn", name, dtype)
    go = _grad_out(case, name)
    ref = _references(case, go)["grad_weight"]
    got = _run("block1xn", "grad_weight", case, go)
    assert got.shape == ref.shape and got.dtype == case.x.dtype
    err, bound = _max_err(got, ref), _bound(case, go, "grad_weight", ref)
    assert err <= bound, f"max error {err:.3g} > bound {bound:.3g}"


def test_block1xn_grad_weight_shift_form_with_nonfinite_input(monkeypatch):
    """A NaN/Inf in x reaches exactly the kept weights' gradients whose taps
    pair it with grad_out, as in the general kernel: the shift form zeroes A
    where a tap's grad_out pixel does not exist."""
    monkeypatch.setattr(_backend("block1xn"), "_GW_SHIFT_MIN_KEPT", 0)
    test_nonfinite_input_reaches_only_what_kept_weights_read("block1xn")
