#!/usr/bin/env bash
# On a GPU machine without network (Python 3.12, torch + CUDA, triton, nvcc,
# ninja): build the CUDA extension in place, run the test suite, then benchmark
# the ResNet-50 3x3 layers at batch 64 in bf16 and fp32 (backends cuda, triton;
# fp32 against strict-fp32 cuDNN, TF32 reported apart), ResNet-50 whole at
# batch 1 and 64 in bf16, and write the report.
#
#   OUT=/some/dir bash benchmarks/run_gpu.sh      # OUT defaults to ./bench_out
#
# Writes to $OUT: build.log, nvidia-smi.txt, gpu_tests.log, {layers,networks}_gpu.{json,log},
# report.md, readme_fragment.md and the plots. Exits 1 at once if the build
# fails; otherwise runs every step and exits non-zero if tests or benchmarks
# failed. Stays within BUDGET_S (default 540 s) by giving each step a timeout
# from what is left.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-./bench_out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
DEADLINE=$((SECONDS + ${BUDGET_S:-540}))
status=0

left() { echo $((DEADLINE - SECONDS)); }

step() {  # step NAME LOG TIMEOUT_S CMD...: run CMD tee'd to LOG, remember a failure
    local name=$1 log=$2 limit=$3
    shift 3
    echo "== $name (timeout ${limit}s)"
    if ((limit < 10)); then
        echo "$name: skipped, out of time" | tee "$log"
        status=1
        return
    fi
    timeout "$limit" "$@" 2>&1 | tee "$log"
    local rc=${PIPESTATUS[0]}
    ((rc == 0)) || { echo "== $name failed (exit $rc)"; status=1; }
}

# --- build: pip must not reach for an index (no network; deps are present) ---
# If pip's packaging step fails (e.g. an old setuptools without PEP 660), an
# in-place build_ext still works from the repo root and reuses ninja's objects.
echo "== build (log: $OUT/build.log)"
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
if ! "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e . >"$OUT/build.log" 2>&1; then
    echo "pip install failed; trying setup.py build_ext --inplace" | tee -a "$OUT/build.log"
    if ! "$PY" setup.py build_ext --inplace >>"$OUT/build.log" 2>&1; then
        tail -n 40 "$OUT/build.log"
        echo "== build failed"
        exit 1
    fi
fi
if ! "$PY" -c "import sparsekernels._C as C, sys; print('with_cuda', C.with_cuda, '| cuda', C.cuda_version, '| cpu simd', C.cpu_simd_path()); sys.exit(0 if C.with_cuda else 1)"; then
    tail -n 40 "$OUT/build.log"
    echo "== build failed: sparsekernels._C has no CUDA kernels"
    exit 1
fi

nvidia-smi 2>&1 | tee "$OUT/nvidia-smi.txt"

# --- tests (CUDA tests run here), leaving ~3 minutes for the benchmarks ------
tests_limit=$(($(left) - 180))
((tests_limit > 300)) && tests_limit=300
step "pytest" "$OUT/gpu_tests.log" "$tests_limit" "$PY" -m pytest -q tests

# --- benchmarks (results files are appended to: start them afresh) -----------
rm -f "$OUT/layers_gpu.json" "$OUT/networks_gpu.json"
step "bench layers" "$OUT/layers_gpu.log" $(($(left) * 2 / 3)) "$PY" -m sparsekernels.bench layers \
    --suite resnet50-3x3 --device cuda --dtype bfloat16 float32 --batch 64 \
    --backend cuda triton --n 16 64 --sparsity 0.5 0.75 0.9 --json "$OUT/layers_gpu.json"
step "bench networks" "$OUT/networks_gpu.log" $(($(left) - 15)) "$PY" -m sparsekernels.bench networks \
    --arch resnet50 --device cuda --dtype bfloat16 --batch 1 64 --backend cuda \
    --n 16 64 --sparsity 0.5 0.75 0.9 --json "$OUT/networks_gpu.json"

results=()
for f in "$OUT/layers_gpu.json" "$OUT/networks_gpu.json"; do
    [ -f "$f" ] && results+=("$f")
done
if ((${#results[@]})); then
    "$PY" -m sparsekernels.bench report "${results[@]}" --out "$OUT" || status=1
fi
echo "== done: outputs in $OUT (exit $status)"
exit $status
