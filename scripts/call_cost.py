"""What an eager inference call of a 1xN conv costs around its kernel, per layer:

    python scripts/call_cost.py [--suite resnet56] [--batch 1] \
        [--json benchmarks/results/checks/call-cost/resnet56_b1.json]

For each layer of a benchmark suite (stride-1 padding as the suite has it)
at each sparsity, and with no block kept (the kernel's fixed cost: stores of
the bias, the input's wide copy), times interleaved in one process:
``module`` (a ``Block1xNConv2d`` called under ``no_grad``: what a network
pays), ``bound`` (its inference plan's C++ forward with the weight's
arguments bound, ``<kind>_forward_plan``) and ``native`` (the backend's
Python wrapper over ``_C.block1xn_forward``, every argument passed per call,
as the plan called it before the bound forward) and ``op`` (the registered
custom op ``sparsekernels::block1xn_conv2d``, what autograd and
``torch.compile``d graphs call). ``module - bound`` is the Python of an eager
call; ``op - native`` the custom op's own cost. Medians of single calls,
microseconds.
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

from sparsekernels.atomic_file import atomic_write
from sparsekernels.bench.env import environment
from sparsekernels.bench.suites import SUITES
from sparsekernels.bench.timing import median_ms
from sparsekernels.nn import Block1xNConv2d
from sparsekernels.ops import block1xn_native


def _module(layer, sparsity: float, n: int) -> Block1xNConv2d:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(layer.cin, layer.cout, layer.k, layer.stride, layer.padding)
    if sparsity < 1:
        return Block1xNConv2d.from_dense(conv, n=n, sparsity=sparsity).eval()
    mask = torch.zeros_like(conv.weight, dtype=torch.bool)
    return Block1xNConv2d.from_dense(conv, n=n, mask=mask).eval()


def _layer_times(layer, sparsity: float, n: int, batch: int, repeat: int) -> dict:
    module = _module(layer, sparsity, n)
    x = torch.randn(batch, layer.cin, layer.hw, layer.hw)
    with torch.no_grad():
        module(x)
        plan = module.__dict__["_plan"]
        values, bias = module.values, module.bias
        tensors, meta = plan.topo.as_op_args()
        conv = {"stride": list(plan.conv.stride), "padding": list(plan.conv.padding),
                "dilation": list(plan.conv.dilation), "groups": plan.conv.groups}
        fns = {
            "module": lambda: module(x),
            "bound": lambda: plan.bound(x, None),
            "native": lambda: block1xn_native.forward(x, values, plan.topo, bias, plan.conv),
            "op": lambda: module.OPS.forward(x, values, tensors, meta, bias, backend="auto",
                                             **conv),
        }
        us = {k: 1e3 * v for k, v in
              median_ms(fns, torch.device("cpu"), warmup=20, repeat=repeat).items()}
    return {"layer": layer.name, "sparsity": sparsity, "n": n, "batch": batch,
            **{f"{k}_us": v for k, v in us.items()},
            "python_us": us["module"] - us["bound"], "op_overhead_us": us["op"] - us["native"]}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="resnet56", choices=sorted(SUITES))
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.9, 1.0],
                   help="1.0: no block kept")
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=300)
    p.add_argument("--json", default="benchmarks/results/checks/call-cost/resnet56_b1.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = [_layer_times(layer, s, args.n, args.batch, args.repeat)
            for layer in SUITES[args.suite] for s in args.sparsity]
    summary = {k: statistics.median(r[k] for r in rows)
               for k in ("module_us", "bound_us", "native_us", "op_us", "python_us",
                         "op_overhead_us")}
    result = {"env": environment(torch.device("cpu")), "args": vars(args),
              "median": summary, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.json, "w") as f:
        f.write(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))
    return result


if __name__ == "__main__":
    main()
