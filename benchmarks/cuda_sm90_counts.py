"""SASS instruction counts of the CUDA Hopper 1xN forward
(csrc/cuda/block1xn/block1xn_forward_sm90.cu), for gpu_model.py.

    python benchmarks/cuda_sm90_counts.py --json benchmarks/results/gpu-sm90/cuda_sm90_counts.json

Compiles the kernel as the GPU build does (tests/test_nvcc_compile.py::
test_sm90a_forward), disassembles it (cuobjdump -sass; Triton bundles one)
and, per bf16 instantiation (BN = 16/32/64), finds three loops by what they
hold: the k loop (k_batch: HGMMA), the A-halo fill (LDGSTS of 4/8/16 bytes)
and the B fill (16-byte LDGSTS only). Counts are static: instructions per
loop iteration, split into a k16 step's share and a batch's fixed part; the
fill loops per piece copied (the widths' branches not taken are included, a
few percent high). Needs nvcc; the committed JSON lets the model run without.

With --probe it also counts the main loops of benchmarks/gpu_loop_probe.cu
(the ldmatrix design's forward and grad-weight, and an fp32 N = 4 forward:
not yet kernels of the library) into the JSON's "probes", for
gpu_design_model.py.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE = "csrc/cuda/block1xn/block1xn_forward_sm90.cu"
PROBE = "benchmarks/gpu_loop_probe.cu"
INSTR = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")


def cuobjdump() -> str:
    found = shutil.which("cuobjdump")
    if found:
        return found
    import triton  # its NVIDIA backend ships one
    return glob.glob(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))[0]


def cutlass_include() -> str:
    """As setup.py's cutlass_include() (importing setup.py would run it)."""
    path = os.environ.get("SPARSEKERNELS_CUTLASS_INCLUDE")
    if path is None:
        import cutlass_library
        path = os.path.join(os.path.dirname(cutlass_library.__file__), "source", "include")
    return path


def compile_sass(nvcc: str, workdir: str, source: str = SOURCE) -> tuple[str, str, list[str]]:
    cmd = [nvcc, "-std=c++17", "-c", "-O3", "-gencode", "arch=compute_90a,code=sm_90a",
           "-Xptxas", "-v", "-DSK_WITH_SM90", "-I", "csrc/include", "-I", "csrc",
           "-I", cutlass_include(), source, "-o", os.path.join(workdir, "sm90.o")]
    log = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stderr
    sass = subprocess.run([cuobjdump(), "-sass", os.path.join(workdir, "sm90.o")],
                          capture_output=True, text=True, check=True).stdout
    return sass, log, cmd


def loops(body):
    """(start, end) index ranges closed by a backward branch."""
    addr = {a: i for i, (a, _) in enumerate(body)}
    out = []
    for i, (a, text) in enumerate(body):
        m = re.search(r"\bBRA (0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < a and int(m.group(1), 16) in addr:
            out.append((addr[int(m.group(1), 16)], i))
    return out


def classify(op: str) -> str:
    """The classes the model charges differently."""
    if op.startswith("HGMMA"):
        return "sync" if "RZ, gdesc[URZ]" in op else "wgmma"  # ptxas's empty commit HGMMA
    name = op.split()[1] if op.startswith("@") else op.split()[0]
    if name.startswith("FFMA"):
        return "ffma"
    if name.startswith("LDSM"):  # ldmatrix: its .x4 form is four wavefronts
        return "ldsm"
    if name.startswith(("LDS", "LD.")):  # LD.E to a shared address: the gather
        return "smem_load_64" if ".64" in name else "smem_load"
    if name.startswith("LDGSTS"):
        return "cp_async"
    if name.startswith(("WARPGROUP", "DEPBAR", "BAR", "WARPSYNC")):
        return "sync"
    if name.startswith(("BRA", "ISETP", "BSSY", "BSYNC")):
        return "control"
    return "alu"  # address arithmetic, packing (PRMT), moves, R2UR


def count(body) -> dict:
    ls = loops(body)
    text = lambda lo, hi: [t for _, t in body[lo:hi + 1]]
    k_loop = min((l for l in ls if any("HGMMA" in t and "URZ" not in t for t in text(*l))),
                 key=lambda l: l[1] - l[0])
    ins = text(*k_loop)
    real = [i for i, t in enumerate(ins) if "HGMMA" in t and "URZ" not in t]
    first_gather = next(i for i, t in enumerate(ins) if re.search(r"\bLDS?(\.E)?\.64\b", t))
    fixed_idx = list(range(first_gather)) + list(range(real[-1] + 1, len(ins)))
    steps = len(real)  # k16 steps per full batch (kBatch)
    per_step, fixed = {}, {}
    for i, t in enumerate(ins):
        c = classify(t)
        d = fixed if i in fixed_idx else per_step
        d[c] = d.get(c, 0) + 1
    per_step = {c: v / steps for c, v in per_step.items()}
    fill = {}
    for l in ls:
        ts = text(*l)
        sites = sum("LDGSTS" in t and ".128" in t for t in ts)
        if not sites or any("HGMMA" in t for t in ts):
            continue
        which = "a_piece" if any("LDGSTS" in t and ".128" not in t for t in ts) else "b_piece"
        fill[which] = len(ts) / sites  # the last copy found: the k loop's own issue()
    return dict(k_steps_per_batch=steps, per_k16_step=per_step, per_batch_fixed=fixed,
                per_k16_step_total=sum(per_step.values()), per_batch_fixed_total=sum(fixed.values()),
                gather_is_generic_ld=any(re.search(r"\bLD\.E\.U16\b", t) for t in ins),
                fill_instructions=fill)


def probe_counts(sass: str, log: str) -> dict:
    """Per probe kernel: its main loop (the innermost loop issuing HGMMA or
    FFMA), its instructions per iteration by class, and ptxas's registers,
    stack frame and spills."""
    regs = {name: int(r) for name, r in re.findall(r"Compiling entry function '(\S+)'[^\n]*\n"
                                                   r"[^\n]*\n[^\n]*\n[^\n]*Used (\d+) registers", log)}
    frames = {name: (int(stack), int(st) + int(ld)) for name, stack, st, ld in re.findall(
        r"Function properties for (\S+)\n\s+(\d+) bytes stack frame, "
        r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)}
    out = {}
    for fn in re.split(r"\n\s*Function : ", sass)[1:]:
        name = fn.split("\n")[0].strip()
        m = re.match(r"_ZN5probe\d+(\w+?)_loop(?:E|ILb1EE)", name)  # templates: the kRing = true one
        if not m:
            continue
        body = [(int(a, 16), t) for a, t in INSTR.findall(fn)]
        lo, hi = min((l for l in loops(body)
                      if any(op in t for _, t in body[l[0]:l[1] + 1] for op in ("HGMMA", "FFMA"))),
                     key=lambda l: l[1] - l[0])
        by_class: dict = {}
        for _, t in body[lo:hi + 1]:
            by_class[classify(t)] = by_class.get(classify(t), 0) + 1
        out[m.group(1)] = dict(function=name, registers=regs.get(name),
                               stack_bytes=frames[name][0], spill_bytes=frames[name][1],
                               serialised_wgmma="C7513" in log,
                               loop_instructions=hi - lo + 1, loop_by_class=by_class)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--nvcc", default=shutil.which("nvcc") or "/usr/local/bin/nvcc")
    ap.add_argument("--probe", action="store_true", help="also count benchmarks/gpu_loop_probe.cu")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        sass, log, cmd = compile_sass(args.nvcc, d)
    if args.probe:
        with tempfile.TemporaryDirectory() as d:
            probe = probe_counts(*compile_sass(args.nvcc, d, PROBE)[:2])
    regs = dict(re.findall(r"kernelI(13__nv_bfloat16Li\d+)E[^\n]*\n(?:[^\n]*\n){0,3}?[^\n]*Used (\d+) registers",
                           log))
    out = dict(source=SOURCE, reproduce="python benchmarks/cuda_sm90_counts.py --json " + os.path.relpath(args.json, ROOT)
               + (" --probe" if args.probe else ""),
               compile=" ".join(c.replace(cutlass_include(), "<cutlass include>") for c in cmd)
               + " && cuobjdump -sass sm90.o",
               nvcc=subprocess.run([args.nvcc, "--version"], capture_output=True, text=True).stdout.split("\n")[-2],
               kernels={})
    for fn in re.split(r"\n\s*Function : ", sass)[1:]:
        m = re.match(r"\S*forward_sm90_kernelI13__nv_bfloat16Li(\d+)E", fn)
        if not m:
            continue
        body = [(int(a, 16), t) for a, t in INSTR.findall(fn)]
        bn = int(m.group(1))
        out["kernels"][str(bn)] = dict(registers=int(regs.get(f"13__nv_bfloat16Li{bn}", 0)), **count(body))
    if args.probe:
        out["probe_source"], out["probes"] = PROBE, probe
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
