#!/usr/bin/env bash
# The GPU run, on the H200 image (Python 3.12 `python3`, torch + CUDA 13,
# Triton, compute-sanitizer, pytest-xdist/-timeout, no network), from the repo
# root of a checkout:
#
#   OUT=/some/dir bash benchmarks/run_gpu.sh             # OUT defaults to ./bench_out
#   OUT=/tmp/x bash benchmarks/run_gpu.sh --dry-run      # on a CPU machine: no GPU step
#
# Steps, each under a timeout from what is left of BUDGET_S (default 450 s,
# inside the 8 minutes a run may take, with time left for a rerun):
#   build      the extension in place for sm_90a (CuTe headers from a carried
#              nvidia-cutlass wheel in .gpu_carry/ when there is one: that
#              folder is git-ignored, so the device tool's `carry` must name
#              it; fill it with `pip download nvidia-cutlass==4.2.0 --no-deps
#              -d .gpu_carry`)
#   loop_probe the next design's main loops (benchmarks/gpu_loop_probe_run.cu):
#              the rate each sustains with its operands in shared memory, the
#              design model's least-known input, measured first
#   tests      the CUDA and Triton tests only, 8 processes, 120 s per test
#   memcheck   compute-sanitizer memcheck on tiny awkward shapes, every kind,
#   racecheck  both gradients, CUDA and Triton (racecheck: CUDA, whose kernels
#              share memory)
#   layers     ResNet-50 3x3 layers, batch 64, forward + grad-input + grad-weight:
#              bf16 1xN N=32 at 50/75/90% (the issue's targets) against cuDNN's
#              faster layout and, forward, cuSPARSELt 2:4; fp16 at 75%; fp32 N=4
#              at 50% with TF32 off (and the TF32 dense conv reported apart)
#   networks   ResNet-50 end to end, bf16, batch 64
#   report     report.md and plots from the JSON
# $OUT ends with four files (the issue allows six): summary.txt (each step's status and
# the tail of its log), results.tgz (every log, nvidia-smi, the report and
# plots), layers_gpu.json, networks_gpu.json. Exits non-zero if the build
# failed (at once) or any later step failed.
#
# --dry-run runs the same steps without a GPU: no build (the extension built
# here is used), the loop probe compiled (where nvcc is) but not run, the
# test selection collected but not run, the sanitizer
# cases and a small benchmark on the CPU, the report and the packing; it is
# what tests/test_run_gpu.py runs.
set -uo pipefail
cd "$(dirname "$0")/.."
DRY=0
[[ ${1:-} == --dry-run ]] && DRY=1
OUT=${OUT:-./bench_out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d)  # everything but the kept files; archived at the end
trap 'rm -rf "$WORK"' EXIT
PY=${PYTHON:-python3}
DEADLINE=$((SECONDS + ${BUDGET_S:-450}))
status=0
: >"$WORK/summary.txt"

left() { echo $((DEADLINE - SECONDS)); }

step() {  # step NAME LIMIT_S CMD...: run CMD to $WORK/NAME.log under a timeout
    local name=$1 limit=$2 log="$WORK/$1.log"
    shift 2
    ((limit > $(left))) && limit=$(left)
    echo "== $name (timeout ${limit}s): $*"
    if ((limit < 10)); then
        echo "$name: skipped, out of time" | tee "$log" >>"$WORK/summary.txt"
        status=1
        return
    fi
    local start=$SECONDS
    timeout "$limit" bash -c '"$@"' "$name" "$@" >"$log" 2>&1  # bash -c: CMD may be a function
    local rc=$?
    local verdict="ok"
    ((rc == 0)) || { verdict="FAILED (exit $rc$( ((rc == 124)) && echo ', timed out'))"; status=1; }
    { echo "== $name: $verdict in $((SECONDS - start)) s"; tail -n 15 "$log"; echo; } \
        | tee -a "$WORK/summary.txt"
}

# bench SUBCOMMAND ARGS...: a benchmark, or in a dry run the same command
# shrunk to the CPU (argparse keeps the last value of a repeated option).
bench() {
    if ((DRY)); then
        local small=(--suite quick --batch 2 --n 4 --sparsity 0.5 --memory-format nchw)
        [[ $1 == networks ]] && small=(--arch resnet20 --batch 1 --no-ort)
        "$PY" -m sparsekernels.bench "$@" --device cpu --backend cpu --dtype float32 --quick \
            --warmup 0 --repeat 1 "${small[@]}"
    else
        "$PY" -m sparsekernels.bench "$@"
    fi
}
export -f bench
export DRY PY PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the checkout's sparsekernels

# --- build: no network, so pip must not reach for an index ------------------
export MAX_JOBS=${MAX_JOBS:-16} TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a}
if ((DRY)); then
    echo "== build: skipped (dry run)" | tee -a "$WORK/summary.txt"
else
    build() {
        for wheel in .gpu_carry/nvidia_cutlass-*.whl; do
            [ -f "$wheel" ] && "$PY" -m pip install --no-index --no-deps "$wheel"
        done
        "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e . \
            || "$PY" setup.py build_ext --inplace
        "$PY" -c "import sparsekernels._C as C, sys; print('with_cuda', C.with_cuda); \
print('hopper forward (sm_90a wgmma):', C.with_cuda and C.block1xn_cuda_hopper_forward()); \
sys.exit(0 if C.with_cuda else 1)"
    }
    export -f build
    step build 240 build
    if ((status)); then
        cp "$WORK/summary.txt" "$OUT/summary.txt"
        tar czf "$OUT/results.tgz" -C "$WORK" .
        exit 1
    fi
    nvidia-smi >"$WORK/nvidia-smi.txt" 2>&1
fi

# --- the design probe's loops (gpu_kernels.md, "The ldmatrix design") --------
loop_probe() {
    if ! command -v nvcc >/dev/null; then
        ((DRY)) && { echo "no nvcc here: not built (dry run)"; return 0; }
        return 1
    fi
    local inc  # the CuTe headers, found as the counts script finds them
    inc=$("$PY" -c "import sys; sys.path.insert(0, 'benchmarks'); \
import cuda_sm90_counts; print(cuda_sm90_counts.cutlass_include())") || return 1
    nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I csrc/include -I csrc -I "$inc" \
        benchmarks/gpu_loop_probe_run.cu -o "$WORK/loop_probe" || return 1
    if ((DRY)); then echo "built, not run (dry run)"; else "$WORK/loop_probe"; fi
}
export -f loop_probe
export WORK
step loop_probe 60 loop_probe

# --- the GPU tests only: CUDA- and Triton-parametrised cases ------------------
GPU_TESTS=(tests/test_sparse_conv.py tests/test_triton.py tests/test_pattern_cuda.py
           tests/test_op_adversarial.py tests/test_compile.py)
if ((DRY)); then
    step tests 60 "$PY" -m pytest -q --collect-only -p no:cacheprovider "${GPU_TESTS[@]}" \
        -k "cuda or triton"
else
    step tests 150 "$PY" -m pytest -q --maxfail 20 -n 8 --timeout 120 -p no:cacheprovider \
        "${GPU_TESTS[@]}" -k "cuda or triton"
fi

# --- compute-sanitizer on tiny awkward shapes --------------------------------
if ((DRY)); then
    step memcheck 60 "$PY" benchmarks/gpu_sanitize.py --device cpu --backend cpu
else
    step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 1 \
        "$PY" benchmarks/gpu_sanitize.py --backend cuda triton
    step racecheck 45 compute-sanitizer --tool racecheck --error-exitcode 1 \
        "$PY" benchmarks/gpu_sanitize.py --backend cuda --dtype bfloat16
fi

# --- benchmarks (results files are appended to: start them afresh) ----------
LAYERS=(--suite resnet50-3x3 --batch 64 --device cuda --backend cuda triton
        --memory-format nchw channels_last --warmup 3 --repeat 10)
rm -f "$OUT/layers_gpu.json" "$OUT/networks_gpu.json"
step layers_bf16 120 bench layers "${LAYERS[@]}" --kind 1xN --n 32 --dtype bfloat16 \
    --sparsity 0.5 0.75 0.9 --passes forward grad-input grad-weight --json "$OUT/layers_gpu.json"
step layers_fp16 60 bench layers "${LAYERS[@]}" --kind 1xN --n 32 --dtype float16 \
    --sparsity 0.75 --passes forward --json "$OUT/layers_gpu.json"
step layers_fp32 45 bench layers "${LAYERS[@]}" --kind 1xN --n 4 --dtype float32 --tf32 \
    --sparsity 0.5 --passes forward --json "$OUT/layers_gpu.json"
step networks 60 bench networks --arch resnet50 --batch 64 --device cuda --dtype bfloat16 \
    --backend cuda triton --kind 1xN --n 32 --sparsity 0.75 0.9 --json "$OUT/networks_gpu.json"

results=()
for f in "$OUT/layers_gpu.json" "$OUT/networks_gpu.json"; do
    [ -f "$f" ] && results+=("$f")
done
if ((${#results[@]})); then
    step report 30 "$PY" -m sparsekernels.bench report "${results[@]}" --out "$WORK/report"
fi

echo "== done (exit $status)" | tee -a "$WORK/summary.txt"
cp "$WORK/summary.txt" "$OUT/summary.txt"
tar czf "$OUT/results.tgz" -C "$WORK" .
exit $status
