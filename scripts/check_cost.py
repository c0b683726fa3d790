"""What the operand checks cost next to the kernel they guard, per layer:

    python scripts/check_cost.py [--suite resnet50] [--out benchmarks/results/checks/cpu_check_cost.json]

For each layer of a benchmark suite at each sparsity, times (interleaved, in
one process) the topology checks the compiled entry points run before a
kernel (``_C.block1xn_check_topology``) and the 1xN ops they guard: the CSR
check of the forward pass against the forward op, and the CSR + transposed
view check of grad-input against the grad-input op. Writes the medians and
each check's share of its pass.
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

import sparsekernels as sk
from sparsekernels._ext import C
from sparsekernels.bench.env import environment
from sparsekernels.bench.suites import SUITES
from sparsekernels.bench.timing import median_ms


def _layer_times(layer, sparsity: float, n: int, batch: int, repeat: int) -> dict:
    torch.manual_seed(0)
    weight = torch.randn(layer.cout, layer.cin, layer.k, layer.k)
    fmt = sk.Block1xN.from_dense(weight, n, sparsity)
    topo = fmt.topology()
    x = torch.randn(batch, layer.cin, layer.hw, layer.hw, requires_grad=True)
    out = sk.block1xn_conv2d(x, fmt, stride=layer.stride, padding=layer.padding)
    grad = torch.randn_like(out)
    geometry = (n, topo.rows_per_group, layer.cout, layer.cin, 1)
    csr = (topo.row_ptr, topo.col_idx, None, None, None, *geometry)
    transposed = (topo.row_ptr, topo.col_idx, topo.col_ptr, topo.block_idx, topo.block_row,
                  *geometry)
    fns = {
        "check_forward": lambda: C.block1xn_check_topology(*csr),
        "check_grad_input": lambda: C.block1xn_check_topology(*transposed),
        "forward": lambda: sk.block1xn_conv2d(x, fmt, stride=layer.stride, padding=layer.padding),
        "grad_input": lambda: torch.autograd.grad(out, x, grad, retain_graph=True),
    }
    ms = median_ms(fns, torch.device("cpu"), warmup=2, repeat=repeat)
    return {"layer": layer.name, "sparsity": sparsity, "n": n, "batch": batch,
            "nnzb": fmt.nnzb, **{f"{k}_ms": v for k, v in ms.items()},
            "check_share_forward": ms["check_forward"] / ms["forward"],
            "check_share_grad_input": ms["check_grad_input"] / ms["grad_input"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="resnet50", choices=sorted(SUITES))
    p.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.9])
    p.add_argument("--n", type=int, default=16)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=10)
    p.add_argument("--out", default="benchmarks/results/checks/cpu_check_cost.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    rows = [_layer_times(layer, s, args.n, args.batch, args.repeat)
            for layer in SUITES[args.suite] for s in args.sparsity]
    summary = {}
    for pass_ in ("forward", "grad_input"):
        share = f"check_share_{pass_}"
        worst = max(rows, key=lambda r: r[share])
        summary[pass_] = {"median_share": statistics.median(r[share] for r in rows),
                          "max_share": worst[share], "worst_layer": worst["layer"],
                          "worst_sparsity": worst["sparsity"],
                          "max_check_ms": max(r[f"check_{pass_}_ms"] for r in rows)}
    result = {"env": environment(torch.device("cpu")), "args": vars(args),
              "summary": summary, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
