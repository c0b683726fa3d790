"""Where a sparse network's time goes, layer by layer, beside ONNX Runtime's
dense run of the same network: the diagnosis behind a `bench networks` row.

    python scripts/layer_times_vs_ort.py --arch resnet50 --sparsity 0.5 --batch 1 \
        --json benchmarks/results/checks/layer-times/resnet50_s50_b1.json

The sparse model is built as `bench networks` builds its 1xN N=16 model
(stem dense, partial rows padded, BN folded, NCHW kernels, fused epilogues,
freed memory kept). Each leaf module is timed inside the forward (hooks before
and after it: a few microseconds each, included), median over --repeat
forwards; ONNX Runtime's own profiler times each of its nodes over the same
number of runs. Convs are paired in execution order (ONNX Runtime fuses the
BN, activations and residual adds into its Conv nodes, as the sparse model
does). Times are medians of one run of each, not interleaved: read the ratios
per layer type, not the third digit.
"""
import argparse
import copy
import json
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch import nn

import sparsekernels as sk
from sparsekernels.atomic_file import atomic_write
from sparsekernels.bench.env import environment
from sparsekernels.bench.kinds import KINDS
from sparsekernels.bench.latency import onnxruntime_session
from sparsekernels.models import MODELS, get_model
from sparsekernels.nn.base import SparseConv2d
from sparsekernels.nn.nchw_kernels import use_nchw_kernels


def sparse_model(dense: nn.Module, sparsity: float, seed: int) -> nn.Module:
    kind = KINDS["1xN"]
    stem = next(name for name, m in dense.named_modules() if type(m) is nn.Conv2d)
    model = kind.sparsify(copy.deepcopy(dense), kind.settings([16], [None], [None])[0],
                          kind.levels([sparsity], ())[0], [stem], True, seed, "cpu")
    sk.fold_batchnorm(model)
    use_nchw_kernels(model)
    return sk.fuse_epilogues(model)


def _is_conv(m: nn.Module) -> bool:
    return isinstance(m, (nn.Conv2d, SparseConv2d))


def leaf_times(model: nn.Module, x: torch.Tensor, repeat: int) -> tuple[list[dict], float]:
    """Median ms of each leaf inside the forward, in execution order; and of
    the whole forward without hooks."""
    with torch.no_grad():
        for _ in range(3):
            model(x)
        whole = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(x)
            whole.append(time.perf_counter() - start)
        leaves = {m: name for name, m in model.named_modules()
                  if name and not list(m.children())}
        order, times, started = [], defaultdict(list), {}

        def before(m, args):
            started[m] = time.perf_counter()
            if m not in times:
                order.append((m, tuple(args[0].shape)))

        def after(m, args, out):
            times[m].append(time.perf_counter() - started[m])

        hooks = [h for m in leaves for h in (m.register_forward_pre_hook(before),
                                             m.register_forward_hook(after))]
        for _ in range(repeat):
            model(x)
        for h in hooks:
            h.remove()
    rows = []
    for m, shape in order:
        row = {"name": leaves[m], "module": type(m).__name__, "input_shape": list(shape),
               "ms": statistics.median(times[m]) * 1e3}
        if _is_conv(m):
            row.update(kernel=m.kernel_size[0], stride=m.stride[0], cout=m.out_channels,
                       groups=m.groups, sparse=isinstance(m, SparseConv2d))
        rows.append(row)
    return rows, statistics.median(whole) * 1e3


def ort_node_times(dense: nn.Module, arch: str, x: torch.Tensor, threads: int,
                   repeat: int) -> tuple[list[dict], float]:
    """Median ms of each ONNX Runtime node (its profiler), in execution order;
    and of the whole run."""
    with tempfile.TemporaryDirectory() as tmp:
        session = onnxruntime_session(dense, arch, threads, profile=str(Path(tmp) / "ort"))
        feed = {"input": x.numpy()}
        for _ in range(3):
            session.run(None, feed)
        whole = []
        for _ in range(repeat):
            start = time.perf_counter()
            session.run(None, feed)
            whole.append(time.perf_counter() - start)
        events = json.loads(Path(session.end_profiling()).read_text())
    times, first, op = defaultdict(list), {}, {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            node = e["name"].removesuffix("_kernel_time")
            times[node].append(e["dur"] / 1e3)
            first.setdefault(node, e["ts"])
            op[node] = e["args"].get("op_name")
    # The warm-up runs are profiled too: the last `repeat` of each node.
    rows = [{"node": n, "op": op[n], "ms": statistics.median(times[n][-repeat:])}
            for n in sorted(times, key=first.__getitem__)]
    return rows, statistics.median(whole) * 1e3


def layer_type(row: dict) -> str:
    if row["groups"] > 1:
        return f"depthwise {row['kernel']}x{row['kernel']} s{row['stride']}"
    return f"{row['kernel']}x{row['kernel']} s{row['stride']}{'' if row['sparse'] else ' dense'}"


def compare(args) -> dict:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    sk.keep_freed_memory()
    dense = get_model(args.arch).eval()
    sparse = sparse_model(dense, args.sparsity, args.seed)
    x = torch.randn(args.batch, *MODELS[args.arch].input_shape)
    ours, ours_ms = leaf_times(sparse, x, args.repeat)
    ort, ort_ms = ort_node_times(dense, args.arch, x, args.threads, args.repeat)
    convs = [r for r in ours if "kernel" in r]
    ort_convs = [r for r in ort if r["op"] in ("Conv", "FusedConv")]
    paired = len(convs) == len(ort_convs)
    by_type = defaultdict(lambda: {"layers": 0, "ms": 0.0, "ort_ms": 0.0})
    for row, node in zip(convs, ort_convs if paired else []):
        row.update(ort_node=node["node"], ort_ms=node["ms"])
        t = by_type[layer_type(row)]
        t["layers"] += 1
        t["ms"] += row["ms"]
        t["ort_ms"] += node["ms"]
    for t in by_type.values():
        t["ort_over_ours"] = t["ort_ms"] / t["ms"]
    return {**environment(torch.device("cpu")), "arch": args.arch, "batch": args.batch,
            "sparsity": args.sparsity, "kind": "1xN", "n": 16, "repeat": args.repeat,
            "ms": ours_ms, "leaves_ms": sum(r["ms"] for r in ours), "ort_ms": ort_ms,
            "ort_nodes_ms": sum(r["ms"] for r in ort), "convs_paired": paired,
            "by_type": dict(by_type), "layers": ours, "ort_nodes": ort}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", required=True, choices=sorted(MODELS))
    p.add_argument("--sparsity", type=float, default=0.5)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", required=True, metavar="PATH")
    args = p.parse_args(argv)
    result = compare(args)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(args.json, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{args.arch} batch {args.batch}, 1xN N=16 {args.sparsity:.0%}: "
          f"{result['ms']:.2f} ms (leaves {result['leaves_ms']:.2f}) vs ONNX Runtime dense "
          f"{result['ort_ms']:.2f} ms")
    for name, t in sorted(result["by_type"].items()):
        print(f"  {name:<22} {t['layers']:>3} layers  {t['ms']:8.2f} ms  ONNX Runtime "
              f"{t['ort_ms']:8.2f} ms  ({t['ort_over_ours']:.2f}x)")
    return result


if __name__ == "__main__":
    main()
