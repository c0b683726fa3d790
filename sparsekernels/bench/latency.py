"""Model-vs-model latency: whole forwards timed interleaved on one device.

One place measures models against each other: ``prune`` and ``export`` (the
exported sparse model against the dense one, :func:`dense_vs_sparse`) and the
``networks`` benchmark (every variant of a network, :func:`median_forward_ms`).
Timing itself is :func:`.timing.median_ms`: warm-up rounds first, then
rounds of one call each, the order rotated every round, so drift hits every
model alike; each model cycles through its own input sets (:func:`input_sets`)
so none finds its input still cached. Models run in eval mode under
``no_grad``; ``torch.get_num_threads()`` is recorded with the times.

The dense baseline of a pruned or exported model is :func:`unpruned`: its
architecture at full width, every conv dense -- what pruning started from, so
the measured speed-up sits beside the FLOP reduction against the same model.

:func:`onnxruntime_forward` runs a dense model under ONNX Runtime, the
``networks`` benchmark's second dense baseline.
"""
from __future__ import annotations

import importlib.util
import math
import tempfile
from pathlib import Path
from typing import Callable, Hashable, Optional, Sequence

import torch
from torch import Tensor, nn

from ..models import get_model
from .env import cache_bytes
from .timing import median_ms, rotating, rotation_sets

# Few rounds: prune and export measure after training, and their users wait.
WARMUP, REPEAT = 2, 10


def onnxruntime_missing() -> Optional[str]:
    """Why :func:`onnxruntime_forward` cannot run here (None: it can)."""
    missing = [name for name in ("onnxruntime", "onnx") if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (f"{' and '.join(missing)} not installed: skipping the ONNX Runtime dense baseline "
            f"(pip install 'sparsekernels[bench]')")


def input_sets(shape: Sequence[int], dtype: torch.dtype, device: torch.device, seed: int,
               rotate: Optional[int] = None) -> list[Tensor]:
    """Random batches of ``shape`` to cycle through: ``rotate`` of them, or
    enough to fill twice the last-level cache (drawn on the CPU, so every
    device sees the same numbers)."""
    gen = torch.Generator().manual_seed(seed)
    sets = rotate or rotation_sets(math.prod(shape) * dtype.itemsize, cache_bytes(device))
    return [torch.randn(*shape, generator=gen).to(device, dtype) for _ in range(sets)]


def median_forward_ms(forwards: dict[Hashable, Callable[[Tensor], object]],
                      inputs: dict[Hashable, list[Tensor]], device: torch.device,
                      warmup: int, repeat: int) -> dict[Hashable, float]:
    """Median ms per forward of each callable on its own input sets, interleaved."""
    steps = {key: rotating([lambda f=forward, x=x: f(x) for x in inputs[key]])
             for key, forward in forwards.items()}
    with torch.no_grad():
        return median_ms(steps, device, warmup, repeat)


def unpruned(arch: str, num_classes: int) -> nn.Module:
    """The dense baseline of a pruned ``arch``: full width, random weights
    (their values do not change the time)."""
    return get_model(arch, num_classes=num_classes)


def dense_vs_sparse(dense: nn.Module, sparse: nn.Module, input_shape: Sequence[int],
                    batches: Sequence[int], *, warmup: int = WARMUP, repeat: int = REPEAT,
                    seed: int = 0) -> dict:
    """Median latency of ``dense`` and ``sparse`` at each batch, measured
    interleaved on the sparse model's device (``dense`` is moved there).
    Returns the record ``prune`` and ``export`` save and print."""
    device = next(sparse.parameters()).device
    models = {"dense": dense.to(device).eval(), "sparse": sparse.eval()}
    rows = []
    for batch in dict.fromkeys(batches):
        # Each model its own sets: shared ones would reach the second model cached.
        inputs = {name: input_sets((batch, *input_shape), torch.float32, device, seed)
                  for name in models}
        ms = median_forward_ms(models, inputs, device, warmup, repeat)
        rows.append({"batch": batch, "dense_ms": ms["dense"], "sparse_ms": ms["sparse"],
                     "speedup": ms["dense"] / ms["sparse"]})
    return {"device": device.type, "threads": torch.get_num_threads(), "warmup": warmup,
            "repeat": repeat, "dense": "the unpruned architecture", "batches": rows}


def table(latency: dict) -> list[str]:
    """``dense_vs_sparse``'s record as the lines a person reads."""
    lines = [f"  latency on {latency['device']}, {latency['threads']} threads, median of "
             f"{latency['repeat']} interleaved runs (dense: {latency['dense']}; "
             f"speed-up = dense ms / sparse ms):",
             f"    {'batch':>6} {'dense ms':>10} {'sparse ms':>10} {'speed-up':>9}"]
    for row in latency["batches"]:
        lines.append(f"    {row['batch']:>6} {row['dense_ms']:>10.3f} {row['sparse_ms']:>10.3f} "
                     f"{row['speedup']:>8.2f}x")
    return lines


def onnxruntime_session(model: nn.Module, arch: str, threads: int, profile: str = ""):
    """``model`` (dense, float32, CPU; of ``arch``'s inputs) exported to ONNX
    as ``export --export_onnx`` writes it, in an ONNX Runtime session with
    ``threads`` intra-op threads (not spinning when idle), one inter-op
    thread, sequential execution and every graph optimisation; with a
    ``profile`` file prefix, profiling each node (see
    :func:`onnxruntime_missing` first)."""
    import onnxruntime as ort

    from ..train.export import export_onnx

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle threads sleep instead of spinning: timed interleaved with PyTorch,
    # ORT's spinning pool kept the 2 cores from the model timed next, which
    # then ran far slower than alone (ORT itself changed within the noise).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(model, arch, Path(tmp) / "dense.onnx")
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnxruntime_forward(model: nn.Module, arch: str, threads: int
                        ) -> tuple[Callable[[Tensor], Tensor], str]:
    """The forward of a CPU batch through :func:`onnxruntime_session`, and
    ONNX Runtime's version."""
    import onnxruntime as ort

    session = onnxruntime_session(model, arch, threads)

    def forward(x: Tensor) -> Tensor:
        return torch.from_numpy(session.run(None, {"input": x.numpy()})[0])

    return forward, ort.__version__
