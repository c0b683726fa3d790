#!/usr/bin/env bash
# Install what sparsekernels needs on a fresh machine and build it in place.
# Safe to re-run. Never lets pip pick a CUDA torch on a CPU machine: torch is
# installed only when missing (the CPU wheel 2.13.0 here), and the extension
# builds against the torch already present (--no-build-isolation).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check "$@"; }

"$PY" -c "import torch" 2>/dev/null || pip_install torch==2.13.0
"$PY" -c "import triton" 2>/dev/null || pip_install triton==3.9.0 || echo "install: no triton (its backend will be skipped)"
pip_install pybind11 ninja numpy pytest hypothesis expecttest tqdm pyyaml scikit-learn pillow matplotlib onnx onnxruntime
# The CUTLASS/CuTe headers of the Hopper 1xN forward (header-only use: no
# deps, no CUDA torch), wherever nvcc can build or compile-check CUDA.
if command -v nvcc >/dev/null 2>&1 || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ]; then
  "$PY" -c "import cutlass_library" 2>/dev/null || pip_install --no-deps nvidia-cutlass==4.2.0 \
    || echo "install: no nvidia-cutlass (the CUDA build leaves the sm_90a kernel out)"
fi
MAX_JOBS=${MAX_JOBS:-2} pip_install --no-build-isolation --no-deps -e .
"$PY" -c "import sparsekernels._C as C; print('sparsekernels built: cuda =', C.with_cuda, '| cpu simd =', C.cpu_simd_path())"
