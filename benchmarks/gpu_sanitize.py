"""Small awkward conv problems for compute-sanitizer: every kind's forward and
both gradients on each backend named, in fp32 and the low-precision dtypes,
each result checked against the float64 oracle (a kernel that writes out of
bounds may also compute garbage).

    compute-sanitizer --tool memcheck  python3 benchmarks/gpu_sanitize.py --backend cuda triton
    compute-sanitizer --tool racecheck python3 benchmarks/gpu_sanitize.py --backend cuda

The shapes are tiny (the sanitizer slows kernels 10-100x) but cross every
edge a kernel tiles: odd sizes, a short last 1xN row, stride, dilation,
groups, channels_last and sliced inputs, an empty batch, a fully pruned
layer. ``--device cpu --backend cpu`` runs the same cases without a GPU (the
run script's dry run). Exits 1 if any case fails.
"""
from __future__ import annotations

import argparse
import sys

import torch

from sparsekernels.kinds import KINDS
from sparsekernels.testing import make_case, reference_grads, reference_output

CASES = {
    "odd": dict(batch=2, cin=5, cout=7, hw=(5, 7), params={"block1xn": {"n": 4}}),
    "stride2_dil2_groups": dict(cin=6, cout=12, groups=3, stride=2, padding=2, dilation=2,
                                hw=(9, 6)),
    "channels_last_wide": dict(cin=20, cout=36, hw=(6, 5), channels_last=True,
                               params={"block1xn": {"n": 32}}),
    # N=16, NCHW with an even width: the sm_90a wgmma forward takes it
    "hopper_nchw": dict(cin=20, cout=32, hw=(6, 8), params={"block1xn": {"n": 16}}),
    "sliced": dict(noncontiguous=True, cout=12),
    "pointwise": dict(kernel=(1, 1), padding=0, cin=17, cout=16),
    "empty_batch": dict(batch=0),
    "fully_pruned": dict(sparsity=1.0),
}
# fp32 results of the sparse kernels sum in another order than the oracle;
# low precision rounds the operands (the tests hold the exact budgets).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 6e-2}


def run_case(kind: str, name: str, backend: str, dtype: torch.dtype, device: str) -> float:
    """Max relative error of the output and both gradients against float64."""
    spec = dict(CASES[name])
    params = spec.pop("params", {}).get(kind, {})
    case = make_case(kind=kind, dtype=dtype, device=device, **spec, **params)
    x = case.x.detach().requires_grad_()
    values = case.weight.values.detach().requires_grad_()
    weight = case.weight.with_values(values)
    out = KINDS[kind].conv2d(x, weight, case.bias, case.stride, case.padding, case.dilation,
                             case.groups, backend=backend)
    go = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
    gx, gv = torch.autograd.grad(out, (x, values), go)
    if device == "cuda":
        torch.cuda.synchronize()
    ref_gx, ref_gv, _ = reference_grads(case, go.double().cpu())
    errs = []
    for got, want in ((out, reference_output(case)), (gx, ref_gx), (gv, ref_gv)):
        if want.numel():
            scale = max(want.abs().max().item(), 1.0)
            errs.append((got.detach().double().cpu() - want).abs().max().item() / scale)
    return max(errs, default=0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    p.add_argument("--backend", nargs="+", default=["cuda"])
    p.add_argument("--dtype", nargs="+", default=["float32", "bfloat16"])
    args = p.parse_args(argv)
    failed = 0
    for kind in KINDS:
        for backend in args.backend:
            for dtype in (getattr(torch, d) for d in args.dtype):
                for name in CASES:
                    try:
                        err = run_case(kind, name, backend, dtype, args.device)
                        ok = err <= TOLERANCE[dtype]
                        msg = f"max rel err {err:.1e}"
                    except Exception as exc:  # noqa: BLE001 -- report every case, then fail
                        ok, msg = False, f"{type(exc).__name__}: {exc}"
                    failed += not ok
                    print(f"{'ok  ' if ok else 'FAIL'} {kind} {backend} "
                          f"{str(dtype).removeprefix('torch.')} {name}: {msg}", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
