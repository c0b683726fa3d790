"""The machine and software a run measured on: recorded with every result."""
from __future__ import annotations

import glob
import importlib.metadata
import os
import platform
import re
import subprocess

import torch

from .. import __version__, _ext

_FALLBACK_CACHE_BYTES = 32 << 20


def cpu_model() -> str:
    try:  # platform.processor() is often empty on Linux
        with open("/proc/cpuinfo") as f:
            names = (line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
            return next(names)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def _package_version(name: str):
    try:  # metadata, not import: importing triton would fix TRITON_INTERPRET too early
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_commit():
    """Short commit of the checkout the package runs from, '+dirty' if edited."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        def git(*args):
            return subprocess.run(["git", *args], cwd=here, capture_output=True, text=True,
                                  timeout=10, check=True).stdout.strip()
        commit = git("rev-parse", "--short", "HEAD")
        return commit + ("+dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: torch.device) -> dict:
    """Record fields describing where and with what the run measured."""
    on_cuda = device.type == "cuda"
    return {
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if on_cuda else cpu_model(),
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cpu_simd": _ext.C.cpu_simd_path() if _ext.has_cpu_kernels() else None,
        "onednn_max_cpu_isa": os.environ.get("ONEDNN_MAX_CPU_ISA"),
        "torch_version": torch.__version__,
        "triton_version": _package_version("triton"),
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if on_cuda else None,
        "python_version": platform.python_version(),
        "sparsekernels_version": __version__,
        "git_commit": _git_commit(),
    }


def device_slug(env: dict) -> str:
    """Directory name for a device's results, e.g. ``cpu-amd-epyc``."""
    name = re.sub(r"[^a-z0-9]+", "-", env["device_name"].lower()).strip("-")
    return f"{env['device']}-{name}"


def cache_bytes(device: torch.device) -> int:
    """Size of the last-level cache inputs must not sit in between calls."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).L2_cache_size
    sizes = []
    for path in glob.glob("/sys/devices/system/cpu/cpu0/cache/index*/size"):
        with open(path) as f:
            text = f.read().strip()  # e.g. "32768K"
        unit = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
        sizes.append(int(text.rstrip("KM")) * unit)
    return max(sizes, default=_FALLBACK_CACHE_BYTES)
