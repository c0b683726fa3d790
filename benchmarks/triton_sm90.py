"""Compile every Triton kernel configuration the library can launch for an
H100/H200 (sm_90), on a machine with no GPU, and report what the GPU would
run: how ``tl.dot`` lowers (wgmma, mma.sync or FMA), registers, spills,
shared memory, global-load widths, cp.async/TMA use, and the main loop's
PTX instruction mix (the input of ``gpu_model.py``).

    python benchmarks/triton_sm90.py --json benchmarks/results/gpu-sm90/triton_sm90.json

What is compiled: every module-level ``_Launcher`` of
``sparsekernels/triton/<kind>.py`` (one per kind in ``kinds.KINDS``), every
config it autotunes over (``.configs_for(dtype)``), for fp16, bf16, fp32 and fp64, and N = 16/32/64
for kernels that take N. Arguments are specialised as Triton's JIT would
specialise them (an int equal to 1 becomes a constant, multiples of 16 get a
divisibility hint, pointers are 16-byte aligned) for one representative call:
``LAYER`` below (ResNet-50's 128@28 3x3 layer, batch 64, stride 1; NCHW
unless the kernel is told the layout).
Every argument name must be in the tables below: a kernel that gains an
argument stops this script with an error naming it, so the tables (and the
committed report) are updated with the kernel.

Figures come from this machine's Triton and its ptxas; a GPU image with
another Triton version may differ a little. Nothing is executed.
"""
from __future__ import annotations

import os

os.environ.pop("TRITON_INTERPRET", None)  # the interpreter would skip compilation
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # as the library runs (silences 3.9's warning)

import argparse  # noqa: E402
import ast  # noqa: E402
import hashlib  # noqa: E402
import importlib  # noqa: E402
import inspect  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from concurrent.futures import ProcessPoolExecutor, as_completed  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton._C.libtriton import native_specialize_impl  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.backends.nvidia.compiler import get_ptxas  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime.jit import MockTensor  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGET = GPUTarget("cuda", 90, 32)
DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32", "fp64": "float64"}
NS = (16, 32, 64)
N4_DTYPES = ("fp32",)  # N=4 too: the fp32 target's N (BLOCK_N padded to 16)

# The representative call the scalars are specialised for.
LAYER = dict(batch=64, cin=128, cout=128, h=28, w=28, k=3, stride=1, pad=1, dil=1)

# Pointer arguments by name: data tensors take the dtype under test, index
# tensors (CSR pointers and indices, pattern plans, the NaN/Inf flag) int32.
DATA_PTRS = {"x_ptr", "v_ptr", "bias_ptr", "out_ptr", "go_ptr", "gi_ptr", "gw_ptr"}
ACC_PTRS = {"part_ptr"}  # fp32 (fp64 for fp64) partial sums
INDEX_PTRS = {"row_ptr", "col_idx", "col_ptr", "block_idx", "block_row", "tap_idx", "tap_ptr",
              "stripe_idx", "stripe_row", "vmap_ptr", "pmap_ptr", "pos_ptr", "flag_ptr"}


def _scalars(n: int | None, cl: bool) -> dict:
    """Scalar arguments' values in LAYER: x and grad_out NCHW-contiguous, or
    channels_last where the kernel takes the layout as ``CL``."""
    L = LAYER
    oh, ow = L["h"], L["w"]  # stride 1, same padding

    def strides(c, h, w):  # (batch, channel, row, column)
        return (c * h * w, 1, w * c, c) if cl else (c * h * w, h * w, w, 1)
    sx, sg = strides(L["cin"], L["h"], L["w"]), strides(L["cout"], oh, ow)
    p = L["batch"] * oh * ow
    return dict(
        P=p, PIN=L["batch"] * L["h"] * L["w"], CIN=L["cin"], C_IN_G=L["cin"], COUT=L["cout"], COUT_G=L["cout"],
        ROWS_PER_GROUP=-(-L["cout"] // n) if n else 1, H=L["h"], W=L["w"], OH=oh, OW=ow,
        # 1xN grad-input's stride phases: the largest one's pixels and extent
        PIX=L["batch"] * -(-L["h"] // L["stride"]) * -(-L["w"] // L["stride"]),
        PH_H=-(-L["h"] // L["stride"]), PH_W=-(-L["w"] // L["stride"]), STEP_H=1, STEP_W=1,
        # 1xN grad-weight's pixel splits (its host's rule at 75%, N=16) and their sum
        SPLIT_P=1408, PART_STRIDE=L["cout"] * L["cin"] // 4 * L["k"] ** 2, SPLITS=36,
        NUMEL=L["cout"] * L["cin"] // 4 * L["k"] ** 2,
        **dict(zip(("sxb", "sxc", "sxh", "sxw"), sx)),
        **dict(zip(("sgb", "sgc", "sgh", "sgw"), sg)), **dict(zip(("sob", "soc", "soh", "sow"), sg)),
        STRIDE_H=L["stride"], STRIDE_W=L["stride"], PAD_H=L["pad"], PAD_W=L["pad"],
        DIL_H=L["dil"], DIL_W=L["dil"],
        # autotune keys: log2 of the pixels, of the kept blocks per row (75%), of Cin/g
        P_LOG2=p.bit_length(), K_LOG2=(L["cin"] // 4).bit_length(), C_LOG2=L["cin"].bit_length(),
    )


def _block_n(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # as block1xn's host code: tl.dot needs >= 16


# Variants: every value is compiled. N (where a kernel takes it) and the
# layout: NCHW or channels_last for every tensor of a call, which the
# LAYOUTS constexprs a kernel takes say (a network runs in one layout).
LAYOUTS = ("CL", "X_CL", "GO_CL")
# other constexprs the launch passes (not the config): name -> f(dtype, variant).
CONSTEXPRS = {
    "KH": lambda dt, v: LAYER["k"],
    "KW": lambda dt, v: LAYER["k"],
    "BLOCK_N": lambda dt, v: _block_n(v["N"]),
    "BLOCK_K": lambda dt, v: max(16, min(triton.next_power_of_2(v["N"]), 32)),  # 1xN grad-input
    "HAS_BIAS": lambda dt, v: True,
    "ACC": lambda dt, v: tl.float64 if dt == "fp64" else tl.float32,
}


# ---------------------------------------------------------------------------
# enumeration (no compilation)
# ---------------------------------------------------------------------------
def _kind_modules() -> list[str]:
    from sparsekernels.kinds import KINDS
    return list(KINDS)


def _launch_constants(module) -> dict[str, dict]:
    """{launcher name: constexprs fixed where it is launched}: constant
    keywords of direct calls (``_forward(grid, ..., EXACT=True)``) and the
    dot/exact pair of ``_launch_dot_or_exact(dot, exact, ...)``."""
    fixed: dict[str, dict] = {}
    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
            continue
        if node.func.id == "_launch_dot_or_exact":
            for arg, exact in zip(node.args[:2], (False, True)):
                fixed.setdefault(arg.id, {})["EXACT"] = exact
        else:
            for kw in node.keywords:
                if kw.arg and isinstance(kw.value, ast.Constant):
                    fixed.setdefault(node.func.id, {})[kw.arg] = kw.value.value
    return fixed


def launchers() -> list[tuple[str, str, object, dict]]:
    """(kind slug, launcher name, launcher, launch constants) of every
    module-level ``_Launcher`` of the kinds' Triton modules."""
    from sparsekernels.triton.common import _Launcher
    out = []
    for slug in _kind_modules():
        module = importlib.import_module(f"sparsekernels.triton.{slug}")
        fixed = _launch_constants(module)
        for name, obj in vars(module).items():
            if isinstance(obj, _Launcher):
                out.append((slug, name, obj, fixed.get(name, {})))
    return out


def source_hash(fn) -> str:
    """sha256 of a kernel's source and of the @triton.jit helpers it calls,
    recursively: what the compile depends on (Triton's own ``cache_key``
    also hashes line numbers, so an edit above a kernel would change it)."""
    seen, h = set(), hashlib.sha256()

    def visit(f):
        if f.__name__ in seen:
            return
        seen.add(f.__name__)
        h.update(f.src.encode())
        for node in ast.walk(ast.parse(f.src)):
            dep = f.__globals__.get(node.id) if isinstance(node, ast.Name) else None
            if isinstance(dep, triton.runtime.JITFunction):
                visit(dep)
    visit(fn)
    return h.hexdigest()[:16]


PASS_OF = {"_sum_splits": "grad-weight"}  # launchers whose name does not say their pass


def _pass_of(launcher_name: str) -> str:
    if launcher_name in PASS_OF:
        return PASS_OF[launcher_name]
    for p in ("grad_input", "grad_weight"):
        if p in launcher_name:
            return p.replace("_", "-")
    return "forward"


def _variants(kernel, dtype: str, ns) -> list[dict]:
    """Every N (if ``kernel`` takes N) x layout (if it takes one) to compile."""
    out = [{}]
    if "N" in kernel.arg_names:
        out = [{"N": n} for n in (*((4,) if dtype in N4_DTYPES else ()), *ns)]
    if any(name in kernel.arg_names for name in LAYOUTS):
        out = [dict(v, CL=cl) for v in out for cl in (False, True)]
    return out


def launcher_configs(launcher, dtype: str, variant: dict = None) -> list:
    """The configs a call in ``dtype`` (and the variant's N and layout, as
    the kernel's constexprs) autotunes over."""
    constexprs = {}
    if variant:
        constexprs = {k: v for k, v in variant.items() if k != "CL"}
        constexprs.update({k: variant["CL"] for k in LAYOUTS
                           if "CL" in variant and k in launcher.kernel.arg_names})
    return launcher.configs_for(getattr(torch, DTYPES[dtype]), **constexprs)


def jobs(dtypes=tuple(DTYPES), ns=NS) -> list[dict]:
    """One job per launcher x config x dtype x variant (N, layout where the
    kernel takes them), each with its argument types already resolved (so an
    unknown argument fails here, before any compilation)."""
    out = []
    for slug, name, launcher, fixed in launchers():
        digest = source_hash(launcher.kernel)
        for dt in dtypes:
            for ci, cfg in enumerate(launcher_configs(launcher, dt)):
                for variant in _variants(launcher.kernel, dt, ns):
                    if cfg not in launcher_configs(launcher, dt, variant):
                        continue  # the launcher drops it for this N/layout
                    _signature(launcher.kernel, cfg, dt, variant, fixed)  # raises on unknown names
                    out.append(dict(
                        kernel=f"{slug}.{name}", kind=slug, module=f"sparsekernels.triton.{slug}",
                        launcher=name, function=launcher.kernel.__name__, config_index=ci,
                        dtype=dt, n=variant.get("N"), variant=variant, **{"pass": _pass_of(name)},
                        source_hash=digest,
                        config=dict(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)))
    return out


def job_key(j: dict) -> tuple:
    """What identifies a compile: kernel, dtype, variant, config."""
    return (j["kernel"], j["dtype"], json.dumps(j["variant"], sort_keys=True),
            json.dumps(j["config"], sort_keys=True))


def _signature(kernel, cfg, dtype: str, variant: dict, fixed: dict):
    """(signature, constexprs, attrs, constexpr values by name) of ``kernel``
    as Triton's JIT builds them for this launch."""
    backend = make_backend(TARGET)
    scalars = _scalars(variant.get("N"), variant.get("CL", False))
    consts = dict(cfg.kwargs, **{k: v for k, v in variant.items() if k != "CL"})
    consts.update({k: variant["CL"] for k in LAYOUTS if "CL" in variant})
    consts.update({k: v for k, v in fixed.items() if k in kernel.arg_names})
    sig, constexprs, attrs, named = {}, {}, {}, {}
    unknown = []
    for i, p in enumerate(kernel.params):
        name = p.name
        if p.is_constexpr:
            if name in consts:
                val = consts[name]
            elif name in CONSTEXPRS:
                val = CONSTEXPRS[name](dtype, variant)
            elif p.has_default:
                val = p.default
            else:
                unknown.append(name)
                continue
            sig[name], constexprs[(i,)], named[name] = "constexpr", val, val
            continue
        if name in DATA_PTRS:
            arg = MockTensor(getattr(torch, DTYPES[dtype]))
        elif name in ACC_PTRS:
            arg = MockTensor(torch.float64 if dtype == "fp64" else torch.float32)
        elif name in INDEX_PTRS:
            arg = MockTensor(torch.int32)
        elif name in scalars:
            arg = scalars[name]
        else:
            unknown.append(name)
            continue
        ty, attr = native_specialize_impl(backend, arg, p.is_const, not p.do_not_specialize,
                                          not p.do_not_specialize_on_alignment)
        sig[name] = ty
        if ty == "constexpr":  # an int specialised on its value (== 1)
            constexprs[(i,)] = attr
        elif isinstance(attr, str) and attr:
            attrs[(i,)] = backend.parse_attr(attr)
    if unknown:
        raise KeyError(f"{kernel.__name__}: no representative value for argument(s) {unknown}; "
                       f"add them to benchmarks/triton_sm90.py (DATA_PTRS/INDEX_PTRS, _scalars or "
                       f"CONSTEXPRS)")
    return sig, constexprs, attrs, named


# ---------------------------------------------------------------------------
# compilation and what the PTX says
# ---------------------------------------------------------------------------
_LDG = re.compile(r"\bld\.global(?:\.[a-z]+)*?\.((?:v\d\.)?[bfsu]\d+)\b")
_WIDTH = re.compile(r"(?:v(\d)\.)?[bfsu](\d+)")
_CP_ASYNC = re.compile(r"\bcp\.async\.c[ag]\.shared\.global.*?,\s*(0x[0-9a-f]+|\d+)")
_WGMMA = re.compile(r"\bwgmma\.mma_async\S*\.m(\d+)n(\d+)k(\d+)")
_MMA = re.compile(r"\bmma\.sync\S*\.m(\d+)n(\d+)k(\d+)")
_FMA = re.compile(r"\b(?:fma\.rn|mul(?:\.rn)?)\.f(?:32|64)\b")
# a dot in TTGIR (tt.dot, or ttng.warp_group_dot for wgmma): its [M, K] x [K, N] operands
_TTGIR_DOT = re.compile(r"(?:\btt\.dot|\bttng\.warp_group_dot)\s.*?:\s*\S*?<(\d+)x(\d+)x\w+.*?\*\s*\S*?<(\d+)x(\d+)x")
_LABEL = re.compile(r"^(\$L\w+):")
_BRA = re.compile(r"\bbra(?:\.uni)?\s+(\$L\w+);")


def _instructions(ptx: str) -> list[str]:
    """The PTX body as a list: instructions and labels (directives, braces,
    comments and declarations dropped)."""
    out = []
    for line in ptx.splitlines():
        s = line.split("//")[0].strip()
        if not s or s[0] in ".{}":
            continue
        if _LABEL.match(s) or s.endswith(";"):
            out.append(s)
    return out


def _load_bytes(lines) -> tuple[Counter, int]:
    widths, total = Counter(), 0
    for s in lines:
        for w in _LDG.findall(s):
            widths[w] += 1
            v, bits = _WIDTH.fullmatch(w).groups()
            total += int(v or 1) * int(bits) // 8
        for size in _CP_ASYNC.findall(s):
            total += int(size, 0)
    return widths, total


def _main_loop(lines: list[str]) -> list[str]:
    """The loop whose body issues the dot: among backward branches, the one
    around the most dot instructions (tensor-core MMAs, else float FMAs),
    innermost on ties. Empty when no loop holds one."""
    labels = {m.group(1): i for i, s in enumerate(lines) if (m := _LABEL.match(s))}
    is_mma = [bool(_WGMMA.search(s) or _MMA.search(s)) for s in lines]
    dot = is_mma if any(is_mma) else [bool(_FMA.search(s)) for s in lines]
    best, best_key = [], (0, 0)
    for j, s in enumerate(lines):
        m = _BRA.search(s)
        if m and labels.get(m.group(1), j + 1) <= j:
            i = labels[m.group(1)]
            key = (sum(dot[i:j + 1]), -(j - i))
            if key > best_key:
                best, best_key = lines[i:j + 1], key
    return best


def _loop_stats(loop: list[str], num_warps: int, ttgir: str) -> dict:
    """Per iteration of the main loop: PTX instructions per thread, the dot
    tile's MACs (TTGIR's dot shape; float FMA/MULs x threads when the kernel
    has no dot), the MACs its MMA instructions issue (more than the tile's
    when warps replicate a tile too small to split among them), global bytes
    loaded per thread."""
    instrs = [s for s in loop if not _LABEL.match(s)]
    issued = 0
    for s in instrs:
        if m := _WGMMA.search(s):  # one per warpgroup
            issued += int(m[1]) * int(m[2]) * int(m[3]) * num_warps // 4
        elif m := _MMA.search(s):  # one per warp
            issued += int(m[1]) * int(m[2]) * int(m[3]) * num_warps
    if not issued:
        issued = sum(bool(_FMA.search(s)) for s in instrs) * 32 * num_warps
    tiles = [int(m[1]) * int(m[2]) * int(m[4]) for m in _TTGIR_DOT.finditer(ttgir)]
    tile = max(tiles, default=issued)  # one dot per main loop (a peeled copy is the same dot)
    widths, load_bytes = _load_bytes(instrs)
    return dict(ptx_instructions=len(instrs), dot_tile_macs=tile, issued_macs=issued,
                global_loads=sum(widths.values()), load_bytes_per_thread=load_bytes,
                macs_per_warp_instruction=round(tile / (len(instrs) * num_warps), 3) if instrs else None)


def _ptxas_report(ptx: str, arch: str) -> dict:
    """Registers, spills, stack frame from ptxas -v with Triton's own flags."""
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "k.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        r = subprocess.run([get_ptxas(TARGET.arch).path, "-lineinfo", "-v", "--regAllocOptLevel=2",
                            f"--gpu-name={arch}", src, "-o", os.path.join(d, "k.o")],
                           capture_output=True, text=True)
    log = r.stdout + r.stderr

    def grab(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else 0
    return dict(registers=grab(r"Used (\d+) registers"),
                spill_bytes=grab(r"(\d+) bytes spill stores") + grab(r"(\d+) bytes spill loads"),
                spill_store_bytes=grab(r"(\d+) bytes spill stores"),
                stack_frame_bytes=grab(r"(\d+) bytes stack frame"))


def compile_job(job: dict, keep_dir: str | None = None) -> dict:
    """Compile one job for sm_90; its record (``error`` set if it failed)."""
    module = importlib.import_module(job["module"])
    launcher = getattr(module, job["launcher"])
    cfg = launcher_configs(launcher, job["dtype"])[job["config_index"]]
    fixed = _launch_constants(module).get(job["launcher"], {})
    sig, constexprs, attrs, named = _signature(launcher.kernel, cfg, job["dtype"], job["variant"], fixed)
    record = dict(job, constexprs={k: str(v) for k, v in named.items()}, specialised_for=LAYER,
                  triton=triton.__version__)
    t0 = time.perf_counter()
    try:
        k = triton.compile(ASTSource(launcher.kernel, sig, constexprs, attrs), target=TARGET,
                           options=dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    except Exception as e:  # noqa: BLE001 (a failing config is a finding, recorded)
        return dict(record, error=f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300]}")
    ptx = k.asm["ptx"]
    if keep_dir:
        os.makedirs(keep_dir, exist_ok=True)
        var = "".join(f".{k}{int(v)}" for k, v in job["variant"].items())
        tag = f"{job['kernel']}.{job['dtype']}{var}.c{job['config_index']}"
        for ext in ("ptx", "ttgir"):
            with open(os.path.join(keep_dir, f"{tag}.{ext}"), "w") as f:
                f.write(k.asm[ext])
    lines = _instructions(ptx)
    widths, _ = _load_bytes(lines)
    arch = re.search(r"^\.target (sm_\w+)", ptx, flags=re.M).group(1)  # sm_90a with wgmma
    dot = "wgmma" if _WGMMA.search(ptx) else "mma.sync" if _MMA.search(ptx) else "fma"
    record.update(
        dot=dot, ptx_target=arch, **_ptxas_report(ptx, arch),
        shared_bytes=k.metadata.shared, ptx_instructions=sum(not _LABEL.match(s) for s in lines),
        global_load_widths=dict(widths), cp_async=len(_CP_ASYNC.findall(ptx)),
        tma=len(re.findall(r"\bcp\.async\.bulk", ptx)),
        loop=_loop_stats(_main_loop(lines), cfg.num_warps, k.asm["ttgir"]),
        compile_s=round(time.perf_counter() - t0, 2),
    )
    return record


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------
def config_label(cfg: dict) -> str:
    blocks = "x".join(str(v) for k, v in cfg.items() if k.startswith("BLOCK_"))
    return f"{blocks} w{cfg['num_warps']} s{cfg['num_stages']}"


def markdown_table(records: list[dict], dtype: str = "bf16") -> str:
    """One row per kernel x config at ``dtype``, N=32 where the kernel takes
    N, NCHW: the compile report's table in gpu_kernels.md. Per main-loop
    iteration: PTX instructions per thread, and per element loaded (data and
    indices alike, counted in elements of ``dtype``)."""
    size = {"fp16": 2, "bf16": 2, "fp32": 4, "fp64": 8}[dtype]
    rows = ["| kernel | config (blocks, warps, stages) | dot | regs | spill B | smem KB "
            "| loads (PTX, whole kernel) | loop instr | instr / loaded element | MAC / warp-instr |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["dtype"] != dtype or r["n"] not in (None, 32) or r["variant"].get("CL"):
            continue
        if "error" in r:
            rows.append(f"| {r['kernel']} | {config_label(r['config'])} | error: {r['error'][:60]} "
                        "| | | | | | | |")
            continue
        loads = " ".join(f"{w}:{c}" for w, c in sorted(r["global_load_widths"].items()))
        loop = r["loop"]
        per_elem = loop["ptx_instructions"] / max(loop["load_bytes_per_thread"] / size, 1)
        rows.append(f"| {r['kernel']} | {config_label(r['config'])} | {r['dot']} | {r['registers']} "
                    f"| {r['spill_bytes']} | {r['shared_bytes'] / 1024:.1f} | {loads} "
                    f"| {loop['ptx_instructions']} | {per_elem:.1f} | {loop['macs_per_warp_instruction']} |")
    return "\n".join(rows)


def summary_table(records: list[dict]) -> str:
    """Markdown, per kernel and dtype over its configs and variants: how the
    dot lowers, the register range, how many compiles spill."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["kernel"], r["dtype"]), []).append(r)
    lines = ["| kernel | dtype | dot | registers | spilling / compiles | max spill B | errors |",
             "|---|---|---|---|---|---|---|"]
    for (kernel, dt), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        dots = "/".join(sorted({r["dot"] for r in ok})) or "-"
        regs = f"{min(r['registers'] for r in ok)}-{max(r['registers'] for r in ok)}" if ok else "-"
        spills = [r["spill_bytes"] for r in ok]
        lines.append(f"| {kernel} | {dt} | {dots} | {regs} | {sum(b > 0 for b in spills)} / {len(rs)} "
                     f"| {max(spills, default=0)} | {len(rs) - len(ok)} |")
    return "\n".join(lines)


def _kept_records(path: str, every: list[dict], todo: list[dict]) -> list[dict]:
    """The records of ``path`` still current (same kernel source, config and
    variant) and not being recompiled: ``--kernels`` updates a report."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        old = json.load(f)
    current = {job_key(j): j["source_hash"] for j in every}
    redo = {job_key(j) for j in todo}
    return [r for r in old if current.get(job_key(r)) == r.get("source_hash") and job_key(r) not in redo]


def _init_worker():
    os.environ.pop("TRITON_INTERPRET", None)
    sys.path.insert(0, ROOT)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", required=True, help="output: a JSON list of records")
    ap.add_argument("--tables", action="store_true",
                    help="compile nothing: print --json's tables (markdown, for gpu_kernels.md)")
    ap.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    ap.add_argument("--n", nargs="+", type=int, default=list(NS), help="N values of 1xN kernels")
    ap.add_argument("--kernels", nargs="+", help="only kernels starting with these (block1xn, "
                    "stripe._forward); the other records of --json are kept where still current")
    ap.add_argument("--stale", action="store_true",
                    help="compile only what --json lacks or has from an older kernel source")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--keep", help="write each compile's PTX and TTGIR to this folder")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    if args.tables:
        with open(args.json) as f:
            records = json.load(f)
        print(summary_table(records) + "\n\nbf16, N=32 (where the kernel takes N), NCHW:\n\n"
              + markdown_table(records))
        return 0
    every = jobs(args.dtypes, args.n)
    todo = [j for j in every if not args.kernels or j["kernel"].startswith(tuple(args.kernels))]
    if args.stale:  # keep every current record, compile the rest
        records = _kept_records(args.json, every, [])
        done = {job_key(r) for r in records}
        todo = [j for j in todo if job_key(j) not in done]
    else:  # --kernels: keep the other kernels' current records
        records = _kept_records(args.json, every, todo) if args.kernels else []
    with ProcessPoolExecutor(args.workers, initializer=_init_worker) as pool:
        futures = [pool.submit(compile_job, j, args.keep) for j in todo]
        for f in tqdm(as_completed(futures), total=len(futures), desc="sm_90 compiles"):
            records.append(f.result())
    order = {job_key(j): i for i, j in enumerate(every)}
    records.sort(key=lambda r: order[job_key(r)])
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(records, f, indent=1)
    print(summary_table(records))
    print(f"{len(records)} records -> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
