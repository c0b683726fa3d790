"""Every registered kind's conv op on every backend this machine runs, against
dense float64 F.conv2d (and its autograd) on the decoded weight: geometry x
kind x backend x dtype x pass, written once."""
import pytest
import torch
import torch.nn.functional as F

from sparsekernels.activation import ACTIVATIONS
from sparsekernels.conv_args import ConvArgs
from sparsekernels.kinds import KINDS
from sparsekernels.testing import (
    LOW_PRECISION, backends_here, devices_here, low_precision_budget, make_case, reference_grads,
    reference_output,
)

BACKENDS = backends_here("cpu")
FAST = [b for b in BACKENDS if b != "triton"]  # the interpreter is slow: fewer cases
# On a GPU machine every case also runs on CUDA with each backend there.
GPU = [("cuda", b) for b in backends_here("cuda")] if "cuda" in devices_here() else []

# Geometry, plus (under "params") each kind's own parameters where a case wants
# odd ones; a kind not named there runs the case with its defaults.
CASES = {
    "default": {},
    "stride2_pad0": dict(stride=2, padding=0, hw=(9, 8)),
    "dilation2": dict(dilation=2, padding=2),
    "groups2": dict(groups=2, cin=8, cout=14, params={"block1xn": {"n": 3}}),
    "depthwise": dict(groups=6, cin=6, cout=12, params={"block1xn": {"n": 2}}),
    # channel counts that leave a remainder after every register tile
    "odd_tiles": dict(cin=37, cout=29, hw=(11, 13), sparsity=0.4, params={"block1xn": {"n": 5}}),
    # square feature maps whose padded rows fill whole vectors (ResNet-like)
    "square16": dict(batch=1, cin=16, cout=16, hw=(16, 16)),
    "square8_batch3": dict(batch=3, cin=24, cout=24, hw=(8, 8)),
    "pointwise": dict(kernel=(1, 1), padding=0, cout=16, params={"block1xn": {"n": 8}}),
    # 1x1 convs read NCHW input in place (no copy): pixel counts that end
    # in a partial vector, groups, and pixel chunks split over several items
    "pointwise_tail": dict(kernel=(1, 1), padding=0, hw=(5, 7), batch=2, groups=2, cin=8,
                           cout=12, params={"block1xn": {"n": 4}}),
    "pointwise_chunks": dict(kernel=(1, 1), padding=0, hw=(13, 24), cin=300, cout=16,
                             sparsity=0.5),
    # 1x1 gradients over planes large enough to run in place, with a tail
    "pointwise_large": dict(kernel=(1, 1), padding=0, hw=(23, 25), batch=2, cin=12, cout=16,
                            params={"block1xn": {"n": 8}}),
    "kernel5x3": dict(kernel=(5, 3), padding=(2, 1), cout=16, cin=5,
                      params={"block1xn": {"n": 16}}),
    "asym_stride": dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    # grad-input runs on the stride's phase planes of dX: a 1x1 stride-2 conv
    # leaves three of four phases without a tap (dX zero there); a stride of
    # 3 with padding beyond the kernel's reach starts phases past the padding
    "pointwise_stride2": dict(kernel=(1, 1), padding=0, stride=2, hw=(9, 8), cout=16),
    # padded by one, the tap's phase lands on dX's odd rows and columns
    "pointwise_stride2_pad1": dict(kernel=(1, 1), padding=1, stride=2, hw=(9, 8), cout=16),
    "stride3_wide_pad": dict(stride=3, padding=(4, 2), dilation=(2, 1), hw=(10, 11)),
    "dense": dict(sparsity=0.0),
    "fully_pruned": dict(sparsity=1.0),
    "empty_batch": dict(batch=0),
    "no_bias": dict(bias=False, params={"block1xn": {"n": 1}}),
    "channels_last": dict(channels_last=True, cout=16, params={"block1xn": {"n": 8}}),
    "noncontiguous": dict(noncontiguous=True),
    "tiny_image": dict(hw=(1, 1), kernel=(1, 1), padding=0),
    "wide": dict(cout=40, cin=3, sparsity=0.3, params={"block1xn": {"n": 32}}),
}


def _case(kind, name, **overrides):
    spec = dict(CASES[name])
    params = spec.pop("params", {}).get(kind, {})
    return make_case(kind=kind, **{**spec, **params, **overrides})


def _backends_for(case_name):
    cpu = BACKENDS if case_name in ("default", "groups2", "fully_pruned", "empty_batch") else FAST
    return [("cpu", b) for b in cpu] + GPU


PARAMS = [(k, c, d, b) for k in KINDS for c in CASES for d, b in _backends_for(c)]


def _conv(kind, case, fmt, x, bias, backend, **args):
    return KINDS[kind].conv2d(x, fmt, bias, case.stride, case.padding, case.dilation,
                              case.groups, backend=backend, **args)


def _grads(kind, case, backend, seed=1):
    """The op's output and its gradients to input, values and bias."""
    values = case.weight.values.detach().clone().requires_grad_(True)
    x = case.x.detach().clone().requires_grad_(True)
    bias = None if case.bias is None else case.bias.detach().clone().requires_grad_(True)
    out = _conv(kind, case, case.weight.with_values(values), x, bias, backend)
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(out.shape, generator=gen, dtype=torch.float64)
    inputs = [t for t in (x, values, bias) if t is not None]
    grads = torch.autograd.grad(out, inputs, g.to(out.device, out.dtype))
    return out, g, grads


def test_every_kind_has_a_nan_case():
    assert set(_NAN_MASKS) == set(KINDS)


@pytest.mark.parametrize("kind,name,device,backend", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_and_grads(kind, name, device, backend, dtype):
    case = _case(kind, name, dtype=dtype, device=device)
    out, g, grads = _grads(kind, case, backend)
    want = [t for t in reference_grads(_case(kind, name), g) if t is not None]
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    assert out.dtype == dtype and len(grads) == len(want)
    torch.testing.assert_close(out.double().cpu(), reference_output(case).cpu(), rtol=tol, atol=tol)
    for got, ref in zip(grads, want):
        torch.testing.assert_close(got.double().cpu(), ref.cpu(), rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("backend", FAST)
def test_output_keeps_channels_last(kind, backend):
    case = _case(kind, "channels_last")
    out = _conv(kind, case, case.weight, case.x, case.bias, backend)
    assert out.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "device,backend", [(d, b) for d, b in [("cpu", b) for b in FAST] + GPU if b != "reference"]
)
def test_gradcheck(kind, device, backend):
    case = make_case(batch=1, cin=4, cout=6, hw=(5, 4), groups=2, stride=(2, 1), bias=True,
                     device=device, kind=kind)

    def fn(x, values, bias):
        return _conv(kind, case, case.weight.with_values(values), x, bias, backend)

    inputs = (case.x.requires_grad_(), case.weight.values.clone().requires_grad_(),
              case.bias.requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("device,backend", [("cpu", b) for b in BACKENDS] + GPU)
@pytest.mark.parametrize("dtype", [torch.float32, *LOW_PRECISION])
def test_lower_precision_within_budget(kind, device, backend, dtype):
    if backend == "triton" and dtype == torch.bfloat16 and device == "cpu":
        pytest.skip("bf16 is garbage under the Triton interpreter; runs on GPU only")
    case = _case(kind, "channels_last", channels_last=False, cin=16, hw=(6, 7), dtype=dtype,
                 device=device, seed=3)
    out = _conv(kind, case, case.weight, case.x, case.bias, backend)
    assert out.dtype == dtype
    err = (out.double() - reference_output(case)).abs().max().item()
    budget = 1e-5 if dtype == torch.float32 else low_precision_budget(case, dtype)
    assert err <= budget, f"{backend} {dtype}: error {err:.3g} > budget {budget:.3g}"


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.filterwarnings("ignore:Using padding=.same. with even kernel")
def test_same_padding_even_kernel_matches_torch(kind):
    case = make_case(kernel=(4, 2), padding=0, dilation=(1, 3), kind=kind)
    out = KINDS[kind].conv2d(case.x, case.weight, case.bias, padding="same", dilation=(1, 3))
    ref = torch.nn.functional.conv2d(case.x, case.weight.to_dense(), case.bias, padding="same",
                                     dilation=(1, 3))
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("kind", KINDS)
def test_unbatched_input(kind):
    case = make_case(batch=1, kind=kind)
    out = KINDS[kind].conv2d(case.x[0], case.weight, case.bias, 1, 1)
    torch.testing.assert_close(out, reference_output(case)[0])


# Per kind, a keep mask of a [4, 2, 3, 3] weight (5x5 image, padding 1) and the
# kind's parameters such that a non-finite x[0, 1, 2, 2] or grad_out[0, 0, 2, 2]
# is read by some kept weights and, in the same tap or channel chunk of a dot
# kernel's tile, by pruned ones: a kernel multiplying a pruned position's zero
# by it (0 * NaN = NaN) spreads it where no kept weight reaches.
_NAN_MASKS = {
    # N=3: outputs 0-2 keep input channel 0; the short row (output 3 and two
    # padded lanes, whose gradient must stay 0) keeps channel 1
    "block1xn": (lambda m: (m[:3, 0].fill_(True), m[3, 1].fill_(True)), {"n": 3}),
    # output 0 keeps only tap (0, 0), output 1 only tap (2, 2), outputs 2-3 none
    "stripe": (lambda m: (m[0, :, 0, 0].fill_(True), m[1, :, 2, 2].fill_(True)), {}),
    # channel 0: the centre; channel 1: the top row only
    "pattern": (lambda m: (m[:, 0, 1, 1].fill_(True), m[:, 1, 0, :].fill_(True)), {}),
}
# Every sparse backend here (the dense reference reads pruned weights).
_SPARSE = [("cpu", b) for b in BACKENDS if b != "reference"] + [
    (d, b) for d, b in GPU if b != "reference"]
_NONFINITE = [pytest.param(float("nan"), id="nan"), pytest.param(float("inf"), id="inf")]


def _nan_case(kind, device):
    """(format, its keep mask, finite x, a finite grad_out draw), float64."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2, 3, 3, generator=gen, dtype=torch.float64)
    mask = torch.zeros_like(w, dtype=torch.bool)
    keep, params = _NAN_MASKS[kind]
    keep(mask)
    fmt = KINDS[kind].format.from_mask(w, mask, **params)
    x = torch.randn(1, 2, 5, 5, generator=gen, dtype=torch.float64)
    go = torch.randn(1, 4, 5, 5, generator=gen, dtype=torch.float64)
    return fmt.to(device), mask, x.to(device), go.to(device)


def _bad(t):
    return ~torch.isfinite(t.detach()).cpu()


# The centre, and the image's edges: there the CPU kernels' wide layouts
# (csrc/cpu/common/wide_layout.h) put pixels the conv never pairs with a tap
# next to real ones.
@pytest.mark.parametrize("where", [(2, 2), (2, 0), (4, 4)], ids=["centre", "left", "corner"])
@pytest.mark.parametrize("value", _NONFINITE)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("device,backend", _SPARSE)
def test_pruned_weights_do_not_exist_for_nan_inputs(kind, device, backend, value, where):
    """A NaN/Inf input reaches exactly the outputs, and the kept weights'
    gradients, whose kept weights read it: none that only pruned weights read
    (the dense reference propagates it through those)."""
    fmt, mask, x, go = _nan_case(kind, device)
    x[0, 1, where[0], where[1]] = value
    spec, marked = KINDS[kind], _bad(x).double()
    values = fmt.values.clone().requires_grad_(True)
    out = spec.conv2d(x, fmt.with_values(values), padding=1, backend=backend)
    (gv,) = torch.autograd.grad(out, values, go)

    reach = F.conv2d(marked, mask.double(), padding=1) > 0
    assert torch.equal(_bad(out), reach)
    reach_w = torch.nn.grad.conv2d_weight(marked, mask.shape, torch.ones(1, 4, 5, 5,
                                          dtype=torch.float64), padding=1)
    assert torch.equal(_bad(gv), fmt.to("cpu").gather(reach_w * mask) > 0)
    assert (_bad(spec.conv2d(x, fmt, padding=1, backend="reference")) & ~reach).any()


@pytest.mark.parametrize("value", _NONFINITE)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("device,backend", _SPARSE)
def test_pruned_weights_do_not_exist_for_nan_grad_out(kind, device, backend, value):
    """A NaN/Inf output gradient reaches exactly the input-gradient elements
    a kept weight carries it to."""
    fmt, mask, x, go = _nan_case(kind, device)
    go[0, 0, 2, 2] = value
    spec = KINDS[kind]
    grads = []
    for b in (backend, "reference"):
        xg = x.clone().requires_grad_(True)
        grads += torch.autograd.grad(spec.conv2d(xg, fmt, padding=1, backend=b), xg, go)
    reach = torch.nn.grad.conv2d_input(x.shape, mask.double(), _bad(go).double(), padding=1) > 0
    assert torch.equal(_bad(grads[0]), reach)
    assert (_bad(grads[1]) & ~reach).any()


@pytest.mark.skipif("cpu" not in BACKENDS, reason="compiled CPU kernels not built")
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("path", ["generic", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_cpu_simd_path(monkeypatch, kind, path, dtype):
    """SPARSEKERNELS_CPU_SIMD forces a path; one this CPU lacks falls back
    (never an illegal instruction)."""
    monkeypatch.setenv("SPARSEKERNELS_CPU_SIMD", path)
    case = _case(kind, "kernel5x3", cout=20, stride=(1, 2), dtype=dtype, seed=7)
    out, g, grads = _grads(kind, case, "cpu")
    oracle = _case(kind, "kernel5x3", cout=20, stride=(1, 2), seed=7)
    want = [reference_output(oracle), *reference_grads(oracle, g)]
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for got, ref in zip([out, *grads], want):
        torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol)


# ---- the forward's epilogue clamp (a fused activation) -------------------------
def _scaled(case, factor=8.0):
    """``case`` with weight and bias scaled so that outputs cross 0 and 6
    (the input keeps its layout)."""
    return case._replace(weight=case.weight.with_values(case.weight.values * factor),
                         bias=None if case.bias is None else case.bias * factor)


def _module_of(kind, case, backend):
    return KINDS[kind].module.from_format(case.weight, case.bias, case.stride, case.padding,
                                          case.dilation, backend=backend)


@pytest.mark.parametrize("kind,name", [(k, c) for k in KINDS for c in CASES])
@pytest.mark.parametrize("activation", ["relu", "relu6"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_activation(kind, name, activation, dtype):
    """A module's activation on every path: the CPU kernels' epilogue (eager
    inference), a non-native backend's output clamped after, and the op
    followed by the activation (autograd), all against the float64 reference."""
    case = _scaled(_case(kind, name, dtype=dtype))
    want = ACTIVATIONS[activation].apply(reference_output(case))
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for backend in FAST:
        module = _module_of(kind, case, backend)
        module.activation = activation
        with torch.no_grad():
            fused = module(case.x)
        assert fused.dtype == dtype
        torch.testing.assert_close(fused.double(), want, rtol=tol, atol=tol)
        x = case.x.detach().clone().requires_grad_()
        torch.testing.assert_close(module(x).double(), want, rtol=tol, atol=tol)
    if want.numel() >= 100 and name not in ("fully_pruned", "dense"):  # the clamp bites
        assert (want == 0).any() and (want > 0).any()
        assert activation == "relu" or (want == 6).any()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["default", "pointwise_large", "odd_tiles", "fully_pruned",
                                  "channels_last"])
def test_native_epilogue_clamps_to_any_bounds(kind, name):
    case = _case(kind, name)
    topo, conv = case.weight.topology(), ConvArgs(case.stride, case.padding, case.dilation,
                                                  case.groups)
    native = KINDS[kind].module.OPS.impl("cpu")
    out = native.forward(case.x, case.weight.values, topo, case.bias, conv, clamp=(-0.3, 0.2))
    torch.testing.assert_close(out, reference_output(case).clamp(-0.3, 0.2), rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_fused_activation_keeps_nan(kind):
    """As torch.relu: a NaN output stays NaN (a clamp by comparisons alone
    would turn it into 0)."""
    case = _case(kind, "default")
    x = case.x.clone()
    x[0, :, 3, 4] = float("nan")
    module = _module_of(kind, case, "cpu")
    with torch.no_grad():
        plain = module(x)
        module.activation = "relu"
        fused = module(x)
    assert plain.isnan().any()
    torch.testing.assert_close(fused, torch.relu(plain), equal_nan=True)


def _native_call(kind, name):
    """A case and what the CPU backend's forward takes for it: the topology,
    the conv arguments and the backend."""
    case = _case(kind, name)
    conv = ConvArgs(case.stride, case.padding, case.dilation, case.groups)
    return case, case.weight.topology(), conv, KINDS[kind].module.OPS.impl("cpu")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_epilogue_bounds_are_named(kind):
    case, topo, conv, native = _native_call(kind, "default")
    for bounds in [(1.0, 0.0), (float("nan"), 1.0), (0.0, float("nan"))]:
        with pytest.raises(ValueError, match="out_min, out_max: expected out_min <= out_max"):
            native.forward(case.x, case.weight.values, topo, case.bias, conv, clamp=bounds)
    module = _module_of(kind, case, "cpu")
    with pytest.raises(ValueError, match="activation: expected None or one of"):
        module.activation = "gelu"


@pytest.mark.parametrize("kind", KINDS)
def test_gradcheck_through_the_activation(kind):
    case = _scaled(make_case(batch=1, cin=4, cout=6, hw=(5, 4), groups=2, stride=(2, 1),
                             bias=True, kind=kind), factor=4.0)
    module = _module_of(kind, case, "cpu")
    module.activation = "relu6"

    def fn(x, values, bias):
        return torch.func.functional_call(module, {"values": values, "bias": bias}, (x,))

    inputs = (case.x.requires_grad_(), case.weight.values.clone().requires_grad_(),
              case.bias.clone().requires_grad_())
    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("kind,name", [(k, c) for k in KINDS for c in CASES])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_fused_residual(kind, name, activation, dtype):
    """conv(x, residual=r): r added before the activation, in the native
    epilogue (eager inference) and after the op (autograd), against the
    float64 reference."""
    case = _scaled(_case(kind, name, dtype=dtype))
    ref = reference_output(case)
    residual = torch.randn(ref.shape, generator=torch.Generator().manual_seed(3),
                           dtype=torch.float64) * 4
    want = ref + residual
    if activation:
        want = ACTIVATIONS[activation].apply(want)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    for backend in FAST:
        module = _module_of(kind, case, backend)
        module.activation = activation
        with torch.no_grad():
            fused = module(case.x, residual=residual.to(dtype))
        torch.testing.assert_close(fused.double(), want, rtol=tol, atol=tol)
        x = case.x.detach().clone().requires_grad_()
        torch.testing.assert_close(module(x, residual=residual.to(dtype)).double(), want,
                                   rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", KINDS)
def test_native_residual_layouts_and_bad_residuals(kind):
    case, topo, conv, native = _native_call(kind, "channels_last")
    ref = reference_output(case)
    residual = torch.randn(ref.shape, dtype=torch.float64)
    residual[0, 1, 2, 3] = float("nan")
    every_other = torch.zeros(*residual.shape[:3], 2 * residual.shape[3], dtype=torch.float64)
    every_other[..., ::2] = residual
    for r in (residual, residual.contiguous(memory_format=torch.channels_last),
              every_other[..., ::2]):
        out = native.forward(case.x, case.weight.values, topo, case.bias, conv,
                             clamp=(0.0, 6.0), residual=r)
        torch.testing.assert_close(out, (ref + residual).clamp(0, 6), equal_nan=True)
    with pytest.raises(ValueError, match=r"residual: expected the output's shape"):
        native.forward(case.x, case.weight.values, topo, case.bias, conv, residual=residual[:, :2])
