"""Property-based check of the 1xN conv over the whole argument space."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sparsekernels as sk
from sparsekernels.testing import backends_here, low_precision_budget, make_case, reference_output


@st.composite
def conv_problems(draw, dtypes):
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    min_hw = [max(1, d * (kk - 1) + 1 - 2 * p) for d, kk, p in zip(dilation, k, padding)]
    hw = (draw(st.integers(min_hw[0], min_hw[0] + 6)), draw(st.integers(min_hw[1], min_hw[1] + 6)))
    return dict(
        batch=draw(st.integers(0, 3)),
        cin=groups * draw(st.integers(1, 5)),
        cout=groups * draw(st.integers(1, 20)),
        hw=hw, kernel=k, n=draw(st.sampled_from([1, 2, 3, 4, 8, 16])),
        sparsity=draw(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0])),
        groups=groups, stride=stride, padding=padding, dilation=dilation,
        bias=draw(st.booleans()), dtype=draw(st.sampled_from(dtypes)),
        channels_last=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
    )


def _check(problem, backend):
    case = make_case(**problem)
    out = sk.block1xn_conv2d(case.x, case.weight, case.bias, case.stride, case.padding,
                          case.dilation, case.groups, backend=backend)
    ref = reference_output(case)
    assert out.shape == ref.shape and out.dtype == case.x.dtype
    tol = {torch.float64: 1e-10, torch.float32: 1e-5}.get(case.x.dtype)
    if tol is None:
        tol = low_precision_budget(case, case.x.dtype)
    else:
        tol *= max(1.0, ref.abs().max().item()) if ref.numel() else 1.0
    err = (out.double() - ref).abs().max().item() if out.numel() else 0.0
    assert err <= tol, f"{backend}: error {err:.3g} > {tol:.3g} for {problem}"


_SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
CPU_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.skipif("cpu" not in backends_here("cpu"), reason="compiled CPU kernels not built")
@settings(max_examples=80, **_SETTINGS)
@given(conv_problems(CPU_DTYPES))
def test_cpu_kernel_matches_reference(problem):
    _check(problem, "cpu")


@pytest.mark.skipif("triton" not in backends_here("cpu"), reason="triton interpreter unavailable")
@settings(max_examples=15, **_SETTINGS)
@given(conv_problems([torch.float32, torch.float16]))  # bf16: garbage under the interpreter
def test_triton_kernel_matches_reference(problem):
    _check(problem, "triton")
