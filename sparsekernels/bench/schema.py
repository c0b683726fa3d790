"""The results file: a JSON list of flat records, one per configuration.

Every record carries ``schema_version`` (:data:`SCHEMA_VERSION`) and
``record_type`` (``"layer"`` from ``bench layers``, ``"network"`` from ``bench
networks``), the fields common to both (run and environment), and its type's
own fields. The fields, their types and meanings are the dicts below (also
tabulated in ``benchmarks/README.md``); :func:`validate` enforces them: every
field present, no other field, each value of its type, numbers finite (NaN is
not JSON), so a file that validates is self-describing.

Runs append: ``--json PATH`` adds records to what PATH already holds
(rewritten after every layer or network, so an interrupted run keeps what it
measured). Version history: 1 = the unversioned records of the first
microbenchmark; 2 = passes split into forward/grad-input/grad-weight/all,
kinds, memory formats, roofline fields, network records; 3 = the pattern
kind's fields (``patterns``, ``entries``, ``connectivity``); 4 = network
records say which engine ran the model (``engine``, ``engine_version``: the
ONNX Runtime dense baseline), which dense baseline their speed-up is against
(``dense_engine``) and the saved model they time (``model_file``); 5 = the
oneDNN ISA cap and BN folding; 6 = layer records carry the cuSPARSELt 2:4
peer (``peer_2to4_ms``, ``peer_2to4_gemm_ms``, ``speedup_vs_2to4``); 7 =
network records say whether activations were fused into the sparse convs
(``fuse_epilogues``) and whether depthwise convs and max pools ran on the library's
kernels (``nchw_kernels``; from commit 9f6f2a0 on, the convs on the image too);
8 = network records say whether the PyTorch models ran with freed memory kept
for reuse (``keep_freed_memory``). Older
files are read as the current version with each added field as it was there
(null, or for a version-3 network record PyTorch and no file).
"""
from __future__ import annotations

import json
import math
import os

from ..atomic_file import atomic_write

SCHEMA_VERSION = 8


def _v4_fields(record: dict) -> dict:
    if record.get("record_type") != "network":
        return {}
    timed = record.get("dense_latency_ms") is not None
    return {"engine": "pytorch", "engine_version": record.get("torch_version"),
            "dense_engine": "pytorch" if timed else None, "model_file": None}


# The fields each version added, as the records of the version before read.
_ADDED = {3: lambda record: dict.fromkeys(("patterns", "entries", "connectivity")),
          4: _v4_fields,
          5: lambda record: {"onednn_max_cpu_isa": None,
                             **({"fold_bn": False} if record.get("record_type") == "network"
                                else {})},
          6: lambda record: (dict.fromkeys(("peer_2to4_ms", "peer_2to4_gemm_ms",
                                            "speedup_vs_2to4"))
                             if record.get("record_type") == "layer" else {}),
          7: lambda record: ({"fuse_epilogues": False, "nchw_kernels": False}
                             if record.get("record_type") == "network" else {}),
          8: lambda record: ({"keep_freed_memory": False}
                             if record.get("record_type") == "network" else {})}

# field -> (type, meaning). Types: str, int, number, bool, list[int], list[str];
# " or null" allows null.
COMMON = {
    "schema_version": ("int", "version of this schema"),
    "record_type": ("str", "'layer' or 'network'"),
    "run_id": ("str", "identifies the command run that wrote the record"),
    "timestamp": ("str", "start of that run, ISO 8601 UTC"),
    "command": ("str", "the command line of that run"),
    "warmup": ("int", "untimed rounds before timing"),
    "repeat": ("int", "timed rounds; times are their median"),
    "seed": ("int", "data and mask seed"),
    "device": ("str", "'cpu' or 'cuda'"),
    "device_name": ("str", "CPU model or GPU name"),
    "cpu_model": ("str", "host CPU model"),
    "cpu_cores": ("int or null", "logical CPUs of the host (os.cpu_count)"),
    "threads": ("int", "torch intra-op threads"),
    "cpu_simd": ("str or null", "SIMD path the CPU kernels dispatched to"),
    "onednn_max_cpu_isa": ("str or null", "ONEDNN_MAX_CPU_ISA the dense CPU convs ran under "
                                          "(null: oneDNN's best for the CPU)"),
    "torch_version": ("str", "torch.__version__"),
    "triton_version": ("str or null", "installed Triton"),
    "cuda_version": ("str or null", "CUDA torch was built with"),
    "cudnn_version": ("int or null", "cuDNN version (CUDA runs)"),
    "python_version": ("str", "Python version"),
    "sparsekernels_version": ("str", "package version"),
    "git_commit": ("str or null", "short commit of the checkout, '+dirty' if edited"),
    "batch": ("int", "batch size"),
    "dtype": ("str", "float32, float16, bfloat16 or float64"),
    "kind": ("str or null", "sparsity kind (a key of bench.kinds.KINDS; --model: its sparse "
                            "layers' kind, else its method); null: the dense model"),
    "n": ("int or null", "block size N of the kind"),
    "patterns": ("int or null", "pattern: library size (patterns per layer)"),
    "entries": ("int or null", "pattern: kept positions per kernel"),
    "connectivity": ("number or null", "pattern: requested fraction of kernels dropped whole "
                                       "(null: the level was given as sparsity)"),
    "sparsity": ("number", "requested fraction of weights pruned (pattern networks with "
                           "connectivity: at a 3x3 kernel; --model: the fraction of the saved "
                           "model's conv and linear weights that are zero)"),
    "backend": ("str or null", "sparse kernel backend; null: the dense model"),
    "memory_format": ("str", "'nchw' or 'channels_last' input of the timed sparse (or dense) run"),
    "rotation_sets": ("int", "input sets cycled through so caches do not flatter"),
    "max_rel_err": ("number or null", "max abs(out - ref) / max abs(ref) against the float64 "
                                      "reference"),
    "tol": ("number", "max_rel_err above which the result is wrong"),
    "ok": ("bool", "checked correct and timed"),
    "error": ("str or null", "why not ok: an exception or 'wrong result: ...'; never timed then"),
}
LAYER = {
    "suite": ("str", "suite name, or 'custom' for --shape"),
    "layer": ("str", "layer name: {k}x{k}[s{stride}]_{cin}-{cout}@{hw}"),
    "cin": ("int", "input channels"),
    "cout": ("int", "output channels"),
    "kh": ("int", "kernel height"),
    "kw": ("int", "kernel width"),
    "stride": ("int", "stride"),
    "padding": ("int", "zero padding"),
    "hw": ("int", "input height = width"),
    "out_hw": ("int", "output height = width"),
    "count": ("int", "occurrences of the shape in its network"),
    "pass": ("str", "'forward', 'grad-input', 'grad-weight' or 'all' (the three)"),
    "actual_sparsity": ("number", "fraction of the dense weight's entries that are zero"),
    "dense_nchw_ms": ("number", "dense conv, NCHW, median ms"),
    "dense_channels_last_ms": ("number", "dense conv, channels_last, median ms"),
    "dense_layout": ("str", "the faster dense layout"),
    "dense_ms": ("number", "the baseline: min of the two (strict fp32 on CUDA)"),
    "dense_tf32_ms": ("number or null", "fp32 on CUDA: the dense conv with TF32, best layout"),
    "sparse_ms": ("number or null", "sparse conv median ms (null when not ok)"),
    "speedup": ("number or null", "dense_ms / sparse_ms"),
    "speedup_vs_tf32": ("number or null", "dense_tf32_ms / sparse_ms"),
    "peer_2to4_ms": ("number or null", "CUDA fp16/bf16 forward: cuSPARSELt 2:4 conv (unfold + "
                                       "sparse GEMM, weight pruned 2:4 by magnitude)"),
    "peer_2to4_gemm_ms": ("number or null", "the 2:4 sparse GEMM alone on a precomputed "
                                            "im2col matrix (the 2:4 path's floor)"),
    "speedup_vs_2to4": ("number or null", "peer_2to4_gemm_ms / sparse_ms"),
    "flop": ("int", "FLOP of the dense pass (2 x MACs, x3 for 'all')"),
    "useful_flop": ("number", "flop x (1 - actual_sparsity): the work the sparse kernel must do"),
    "dense_tflops": ("number", "flop / dense_ms"),
    "sparse_tflops": ("number or null", "useful_flop / sparse_ms (achieved)"),
    "peak_tflops": ("number or null", "measured dense matmul peak at this dtype"),
    "bandwidth_gbs": ("number", "measured device-memory copy bandwidth, GB/s"),
    "sparse_peak_fraction": ("number or null", "sparse_tflops / peak_tflops"),
    "ideal_speedup": ("number or null", "roofline ideal (1 / density capped by memory traffic)"),
    "ideal_fraction": ("number or null", "speedup / ideal_speedup"),
}
NETWORK = {
    "arch": ("str", "model zoo architecture"),
    "input_shape": ("list[int]", "one sample's input shape (C, H, W)"),
    "mode": ("str", "'eager' or 'compiled' (torch.compile)"),
    "engine": ("str", "what ran the model: 'pytorch' or 'onnxruntime' (a dense baseline)"),
    "engine_version": ("str", "that engine's version"),
    "model_file": ("str or null", "the exported model timed (--model; its dense baselines "
                                  "too); null: a zoo network"),
    "exclude": ("list[str]", "conv name globs kept dense on request (the stem by default)"),
    "fold_bn": ("bool", "eval-mode BatchNorm folded into the convs (dense and sparse PyTorch "
                        "models; ONNX Runtime folds its own)"),
    "fuse_epilogues": ("bool", "ReLU / ReLU6 after a sparse conv run in its epilogue "
                                 "(sparsekernels.fuse_epilogues; ONNX Runtime fuses its own)"),
    "nchw_kernels": ("bool", "the sparse models' depthwise convs, dense convs on the image (the "
                             "stem) and max pools ran on the library's NCHW kernels "
                             "(sparsekernels.nn.use_nchw_kernels)"),
    "keep_freed_memory": ("bool", "the PyTorch models, dense and sparse, ran with malloc keeping "
                                  "freed memory for reuse (sparsekernels.keep_freed_memory; "
                                  "ONNX Runtime keeps its own arena)"),
    "convs": ("int", "nn.Conv2d layers of the dense model"),
    "sparse_convs": ("int", "convs swapped for the kind's sparse module"),
    "dense_convs": ("list[str]", "names of the convs left dense (excluded, depthwise, ...)"),
    "flops": ("int", "FLOP per sample of this model (conv + linear, pruned weights not counted)"),
    "dense_flops": ("int", "FLOP per sample of the dense model"),
    "flop_reduction": ("number", "dense_flops / flops: the speed-up FLOP counting promises"),
    "latency_ms": ("number or null", "median ms per forward of one batch"),
    "throughput_ips": ("number or null", "batch / latency, images per second"),
    "dense_latency_ms": ("number or null", "the faster dense baseline's latency (PyTorch in its "
                         "best layout or ONNX Runtime), same mode (null if both failed)"),
    "dense_layout": ("str or null", "that baseline's layout"),
    "dense_engine": ("str or null", "that baseline's engine: 'pytorch' or 'onnxruntime'"),
    "speedup": ("number or null", "dense_latency_ms / latency_ms: the measured speed-up"),
}
FIELDS = {"layer": {**COMMON, **LAYER}, "network": {**COMMON, **NETWORK}}

_TYPES = {
    "str": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                         and math.isfinite(v)),
    "bool": lambda v: isinstance(v, bool),
    "list[int]": lambda v: isinstance(v, list) and all(_TYPES["int"](x) for x in v),
    "list[str]": lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
}


def _type_ok(spec: str, value) -> bool:
    base, _, null = spec.partition(" or ")
    return (null == "null" and value is None) or _TYPES[base](value)


def validate(record: dict) -> None:
    """Raise ValueError naming the first field that breaks the schema."""
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    version = record.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version is {version!r}; this tool reads {SCHEMA_VERSION}")
    fields = FIELDS.get(record.get("record_type"))
    if fields is None:
        raise ValueError(f"record_type: expected one of {sorted(FIELDS)}, "
                         f"got {record.get('record_type')!r}")
    if missing := [f for f in fields if f not in record]:
        raise ValueError(f"missing fields {missing}")
    if unknown := [f for f in record if f not in fields]:
        raise ValueError(f"unknown fields {unknown}")
    for name, (spec, _) in fields.items():
        if not _type_ok(spec, record[name]):
            raise ValueError(f"field {name!r}: expected {spec}, got {record[name]!r}")


def upgrade(record):
    """A record of an older schema version brought to this one, in place."""
    if isinstance(record, dict) and isinstance(record.get("schema_version"), int):
        for version in range(record["schema_version"] + 1, SCHEMA_VERSION + 1):
            if record["schema_version"] < version and version in _ADDED:
                record.update(_ADDED[version](record))
                record["schema_version"] = version
    return record


def load(path: str) -> list[dict]:
    """The validated records of one results file."""
    with open(path) as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of records")
    for i, record in enumerate(records):
        try:
            validate(upgrade(record))
        except ValueError as exc:
            raise ValueError(f"{path}: record {i}: {exc}") from None
    return records


class ResultsFile:
    """Records appended to a JSON file, rewritten whole (atomically) on each add."""

    def __init__(self, path: str):
        self.path = path
        self.records = load(path) if os.path.exists(path) else []

    def add(self, records: list[dict]) -> None:
        for record in records:
            validate(record)
        self.records.extend(records)
        with atomic_write(self.path, "w") as f:
            json.dump(self.records, f, indent=1, allow_nan=False)
            f.write("\n")


def kind_label(r: dict) -> str:
    """A record's kind as people read it: ``1xN N=16``, ``pattern 4x8``
    (entries per kernel x library size), or ``stripe``."""
    if r.get("n") is not None:
        return f"{r['kind']} N={r['n']}"
    if r.get("patterns") is not None:
        return f"{r['kind']} {r['entries']}x{r['patterns']}"
    return str(r["kind"])
