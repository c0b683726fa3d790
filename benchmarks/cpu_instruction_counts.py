"""Instructions per call of the sparse CPU kernels and of oneDNN's dense conv,
counted by Valgrind's callgrind: a count that does not move with the load of a
shared machine, where the timings' ratios do by tens of percent.

    python benchmarks/cpu_instruction_counts.py --suite resnet50-3x3 --kind 1xN --n 16 \\
        --sparsity 0.5 0.75 0.9 --batch 8 --passes forward grad-input grad-weight \\
        --json benchmarks/results/checks/instruction-counts/xeon_resnet50-3x3_1xn.json

Every call runs once to warm the plan caches, then once counted (one thread).
Valgrind decodes no AVX-512: under it both the library and oneDNN take their
AVX2 paths, so the counts are those of the AVX2 pairing on any machine.

Read ``ir_ratio`` (dense instructions / sparse) beside the timed speed-up of
the same layer: where they agree, the kernel is bound by its instruction
count and a faster kernel must execute fewer instructions; where the timed
ratio is well below it, the time goes to waiting (memory, dependencies),
which instruction counts do not see. ``ir_per_fma`` is instructions per
multiply-add vector of kept work (8 float lanes): the AVX2 forward tile's
loop alone executes 27 per 12 FMAs (2.25: 3 loads, 4 broadcasts, 12 FMAs, 8
of addressing and loop control), so what a record shows above that is
computed padding and work around the tiles. Callgrind counts each iteration
of ``rep stosb`` / ``rep movsb`` as an instruction: glibc's large memset and
memcpy show one instruction per byte, far above their share of the time.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LANES = 8  # float32 lanes of the AVX2 vectors valgrind runs
# The libc call that marks a counted call's bounds: callgrind dumps its
# counts on entering it (nothing else in the process calls it).
MARK = "getppid"


def _sparse_conv(kind, fmt, layer, backend, x):
    return kind.conv(x, fmt, layer, backend)


def _steps(args):
    """(label, make) for every dense and sparse call: make() returns the call
    (every value it uses bound, not read from the loop when it runs)."""
    import torch
    import torch.nn.functional as F

    from sparsekernels.bench.kinds import KINDS
    from sparsekernels.bench.measure import LAYOUTS, PASSES, InputSet, pass_call
    from sparsekernels.bench.suites import SUITES, select
    from sparsekernels.ops import backends

    backend = backends.resolve("auto", torch.device("cpu"))
    kind = KINDS[args.kind]
    gen = torch.Generator().manual_seed(args.seed)
    for layer in select(SUITES[args.suite], args.layers, args.suite):
        macs = (args.batch * layer.cout * layer.cin * layer.k ** 2 * layer.out_hw ** 2)
        w = torch.randn(layer.cout, layer.cin, layer.k, layer.k, generator=gen)
        w *= (layer.cin * layer.k ** 2) ** -0.5
        x = torch.randn(args.batch, layer.cin, layer.hw, layer.hw, generator=gen)
        g = torch.randn(args.batch, layer.cout, layer.out_hw, layer.out_hw, generator=gen)
        for pass_ in args.passes:
            needs_x, needs_w = PASSES[pass_]
            inputs = InputSet(x, g if pass_ != "forward" else None, needs_x)
            base = {"layer": layer.name, "pass": pass_, "dense_macs": macs}
            for layout, fmt in LAYOUTS.items():
                wl = w.contiguous(memory_format=fmt).requires_grad_(needs_w)
                xl, gl = inputs.by_layout[layout]
                conv = partial(F.conv2d, weight=wl, stride=layer.stride, padding=layer.padding)
                yield ({**base, "conv": "dense", "layout": layout},
                       partial(pass_call, pass_, conv, xl, wl, gl))
            for setting in kind.settings(args.n, args.patterns, args.entries):
                for level in kind.levels(args.sparsity, args.connectivity):
                    fmt = kind.build(w, setting, level, args.seed)
                    param = kind.param(fmt).requires_grad_(needs_w)
                    density = (fmt.to_dense() != 0).double().mean().item()
                    label = {**base, "conv": "sparse", "layout": "nchw", "kind": args.kind,
                             **kind.record_fields(setting, level, layer.k ** 2),
                             "kept_macs": round(macs * density)}
                    forward = partial(_sparse_conv, kind, fmt, layer, backend)
                    xl, gl = inputs.by_layout["nchw"]
                    yield label, partial(pass_call, pass_, forward, xl, param, gl)


def child(args) -> None:
    """Under callgrind: each step warmed, then counted between two MARK calls."""
    import torch

    from sparsekernels.bench.env import environment

    torch.set_num_threads(1)
    labels = []
    for label, make in _steps(args):
        call = make()  # a backward pass's forward runs here, before the marks
        call()
        os.getppid()
        call()
        os.getppid()
        labels.append(label)
    # Read under valgrind: cpu_simd says which path its CPU model took.
    env = environment(torch.device("cpu"))
    Path(args.child).write_text(json.dumps({"environment": env, "labels": labels}))


def _short(name: str) -> str:
    """'ns::fn<T, 4>(args)' -> 'ns::fn<T, 4>' (the last two scopes)."""
    depth, cut = 0, len(name)
    for i, ch in enumerate(name):  # the argument list: the first '(' outside <...>
        depth += (ch == "<") - (ch == ">")
        if ch == "(" and depth == 0:
            cut = i
            break
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(name[:cut]):
        depth += (ch == "<") - (ch == ">")
        if depth == 0 and name.startswith("::", i):
            parts.append(name[start:i])
            start = i + 2
    parts.append(name[start:cut])
    return "::".join(p for p in parts[-2:] if p)[:120]


def _dump_costs(path: Path, top: int) -> tuple[int, list]:
    """Total instructions of one callgrind dump (uncompressed names and
    positions) and its `top` functions by their own count (calls excluded)."""
    total, own, fn, call_cost = 0, Counter(), None, False
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            total = int(line.split()[1])
        elif line.startswith("fn="):
            fn = _short(line[3:])
        elif line.startswith("calls="):
            call_cost = True  # the next cost line is the callee's inclusive cost
        elif line[:1].isdigit() or line.startswith("0x"):
            if call_cost:
                call_cost = False
            elif fn is not None:
                own[fn] += int(line.split()[-1])
    return total, [[name, count] for name, count in own.most_common(top)]


def measure(args) -> tuple[dict, list[dict]]:
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "labels.json"
        path = [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "passive",
               "PYTHONPATH": os.pathsep.join(path)}
        subprocess.run(["valgrind", "--tool=callgrind", f"--dump-before={MARK}",
                        "--compress-strings=no", "--compress-pos=no",
                        f"--callgrind-out-file={tmp}/cg.%p", "--quiet",
                        sys.executable, __file__, *sys.argv[1:], "--child", str(manifest)],
                       check=True, env=env)
        run = json.loads(manifest.read_text())
        labels = run["labels"]
        dumps = sorted(Path(tmp).glob("cg.*.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
        if len(dumps) != 2 * len(labels):
            sys.exit(f"expected {2 * len(labels)} callgrind dumps, found {len(dumps)}")
        records = []
        for i, label in enumerate(labels):
            total, funcs = _dump_costs(dumps[2 * i + 1], args.top)
            records.append({**label, "instructions": total, "top_functions": funcs})
    return run["environment"], records


def summarize(records: list[dict]) -> None:
    """Per sparse record: the fewer of the dense layouts' counts over its own."""
    dense = {}
    for r in records:
        if r["conv"] == "dense":
            key = (r["layer"], r["pass"])
            dense[key] = min(dense.get(key, r["instructions"]), r["instructions"])
    for r in records:
        macs = r["kept_macs"] if r["conv"] == "sparse" else r["dense_macs"]
        r["ir_per_fma"] = round(r["instructions"] / (macs / LANES), 3)
        if r["conv"] == "sparse":
            r["dense_instructions"] = dense[(r["layer"], r["pass"])]
            r["ir_ratio"] = round(r["dense_instructions"] / r["instructions"], 3)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--suite", default="resnet50-3x3")
    p.add_argument("--layers", nargs="+", metavar="GLOB")
    p.add_argument("--kind", default="1xN")
    p.add_argument("--n", nargs="+", type=int, default=[16])
    p.add_argument("--patterns", nargs="+", type=int, default=[8])
    p.add_argument("--entries", nargs="+", type=int, default=[4])
    p.add_argument("--sparsity", nargs="+", type=float, default=[0.5, 0.75, 0.9])
    p.add_argument("--connectivity", nargs="+", type=float)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--passes", nargs="+", default=["forward"],
                   choices=["forward", "grad-input", "grad-weight"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=8, help="functions listed per call")
    p.add_argument("--json", type=Path, help="write the records here")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)
    started = time.time()
    env, records = measure(args)
    summarize(records)
    valgrind = subprocess.run(["valgrind", "--version"], capture_output=True, text=True)
    for r in records:
        if r["conv"] == "sparse":
            print(f"{r['layer']:>22} {r['pass']:>11} {r['sparsity']:.2f}: "
                  f"{r['instructions'] / 1e6:9.1f} M  dense/sparse {r['ir_ratio']:.2f}  "
                  f"per FMA {r['ir_per_fma']:.2f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
            "seconds": round(time.time() - started), "lanes": LANES,
            "valgrind": valgrind.stdout.strip(), "environment": env, "records": records}, indent=1) + "\n")


if __name__ == "__main__":
    main()
