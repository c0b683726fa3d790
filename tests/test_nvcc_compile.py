"""Compile-checks the CUDA kernels without torch or a GPU.

Every ``.cu`` under ``csrc/`` must build on its own with nvcc for sm_80 and
sm_90 (the tensor-core path is sm_80+; the Hopper kernel compiles to a stub
there), the Hopper 1xN forward must build for sm_90a with wgmma in its PTX,
no spills and no wgmma serialisation, and the standalone CMake project must
configure and build (with the CUDA part only where nvcc exists). Each test is
skipped where its tool, or the CuTe headers a source needs, is not installed.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CU_SOURCES = sorted((ROOT / "csrc").rglob("*.cu"))
NVCC = shutil.which("nvcc")
CMAKE = shutil.which("cmake")
TIMEOUT_S = 900

requires_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found")
SM90_SOURCE = ROOT / "csrc/cuda/block1xn/block1xn_forward_sm90.cu"


def cutlass_include() -> Path | None:
    """The CUTLASS/CuTe include folder (as setup.py finds it), or None."""
    path = os.environ.get("SPARSEKERNELS_CUTLASS_INCLUDE")
    if path is None:
        try:
            import cutlass_library
        except ImportError:
            return None
        path = Path(cutlass_library.__file__).parent / "source" / "include"
    path = Path(path)
    return path if (path / "cute" / "tensor.hpp").is_file() else None


CUTLASS = cutlass_include()
requires_cute = pytest.mark.skipif(
    CUTLASS is None, reason="CuTe headers not found (pip install --no-deps nvidia-cutlass)"
)


def _includes(source: Path) -> list[str]:
    flags = ["-I", "csrc/include", "-I", "csrc"]
    if "<cute/" in source.read_text():
        if CUTLASS is None:
            pytest.skip("CuTe headers not found (pip install --no-deps nvidia-cutlass)")
        flags += ["-I", str(CUTLASS)]
    return flags


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S
    )
    assert proc.returncode == 0, (
        f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout + proc.stderr


@requires_nvcc
@pytest.mark.parametrize(
    "source", CU_SOURCES, ids=[str(p.relative_to(ROOT)) for p in CU_SOURCES]
)
def test_nvcc_compiles(source: Path, tmp_path: Path) -> None:
    _run(
        [
            NVCC,
            "-std=c++17",
            "-c",
            "-gencode", "arch=compute_80,code=sm_80",
            "-gencode", "arch=compute_90,code=sm_90",
            *_includes(source),
            str(source.relative_to(ROOT)),
            "-o", str(tmp_path / (source.stem + ".o")),
        ],
        cwd=ROOT,
    )


@requires_nvcc
@requires_cute
def test_sm90a_forward(tmp_path: Path) -> None:
    """The Hopper kernel as the GPU build makes it (-gencode compute_90a/sm_90a,
    the form nvcc 13.0 assembles): every instantiation (fp16/bf16 x BN
    16/32/64) issues wgmma (PTX kept with -keep), spills nothing, and ptxas
    does not serialise its wgmmas (C7513, which a register operand written
    while an earlier wgmma is in flight causes)."""
    log = _run(
        [
            NVCC, "-std=c++17", "-c", "-O3",
            "-gencode", "arch=compute_90a,code=sm_90a",
            "-Xptxas", "-v", "-keep", "-keep-dir", str(tmp_path),
            "-DSK_WITH_SM90",
            *_includes(SM90_SOURCE),
            str(SM90_SOURCE.relative_to(ROOT)),
            "-o", str(tmp_path / "sm90.o"),
        ],
        cwd=ROOT,
    )
    ptx = "".join(p.read_text() for p in tmp_path.glob("*.ptx"))
    kernels = re.findall(r"^(?:\.visible )?\.entry (\S*forward_sm90_kernel\S*)\(", ptx, re.M)
    assert len(kernels) == 6, kernels
    bodies = re.split(r"^(?:\.visible )?\.entry ", ptx, flags=re.M)[1:]
    for name in kernels:
        body = next(b for b in bodies if b.startswith(name + "("))
        assert "wgmma.mma_async.sync.aligned.m64n" in body, name
        assert "cp.async" in body, name
    props = re.findall(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert len(props) == 6, log
    assert all(p == ("0", "0", "0") for p in props), log
    assert "C7513" not in log, log


@pytest.mark.skipif(CMAKE is None, reason="cmake not found")
def test_cmake_build(tmp_path: Path) -> None:
    build = tmp_path / "build"
    # One architecture: test_nvcc_compiles already covers sm_80 and sm_90 per
    # file, and this halves the CUDA build time (about 30 s vs 60 s on 2 cores).
    _run(
        [
            CMAKE, "-S", str(ROOT), "-B", str(build),
            "-DCMAKE_BUILD_TYPE=Release",
            "-DCMAKE_CUDA_ARCHITECTURES=80",
        ],
        cwd=ROOT,
    )
    _run([CMAKE, "--build", str(build), "-j2"], cwd=ROOT)


BINDINGS = sorted((ROOT / "python_bindings").glob("*.cpp"))


@requires_nvcc
@pytest.mark.parametrize("source", BINDINGS, ids=[p.name for p in BINDINGS])
def test_bindings_compile_with_cuda(source: Path, tmp_path: Path) -> None:
    """The bindings' CUDA-only code (SK_WITH_CUDA: the launcher calls, the
    stream and device guard) is built only on a GPU machine; this
    syntax-checks it here against torch's CUDA headers. A CPU torch wheel
    lacks one generated header of theirs (export macros only), stubbed."""
    torch = pytest.importorskip("torch")
    import sysconfig

    stub = tmp_path / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h"
    stub.parent.mkdir(parents=True)
    stub.write_text("#pragma once\n")
    include = Path(torch.__file__).parent / "include"
    homes = [os.environ.get("CUDA_HOME"), Path(NVCC).resolve().parents[1], "/usr/local/cuda"]
    cuda_include = next((Path(h) / "include" for h in homes
                         if h and (Path(h) / "include" / "cuda_runtime_api.h").exists()), None)
    if cuda_include is None:
        pytest.skip("the CUDA runtime headers were not found (set CUDA_HOME)")
    _run(
        [
            "g++", "-std=c++17", "-fsyntax-only", "-DSK_WITH_CUDA", "-DSK_WITH_SM90",
            '-DSK_CUDA_VERSION="13.0"', "-DTORCH_EXTENSION_NAME=_C",
            "-I", str(tmp_path), "-I", str(include),
            "-I", str(include / "torch" / "csrc" / "api" / "include"),
            "-I", sysconfig.get_paths()["include"], "-I", str(cuda_include),
            "-I", "csrc/include", "-I", "csrc", str(source.relative_to(ROOT)),
        ],
        cwd=ROOT,
    )
