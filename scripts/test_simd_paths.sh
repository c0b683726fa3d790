#!/usr/bin/env bash
# Run the tests of the compiled CPU kernels again under every other SIMD path
# this CPU supports (SPARSEKERNELS_CPU_SIMD; scripts/test.sh ran the whole
# suite under the native one). A path counts as supported when the extension,
# asked for it, reports it: it ignores a request above what the CPU runs.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
KERNEL_TESTS=(tests/test_sparse_conv.py tests/test_properties.py tests/test_bad_inputs.py
              tests/test_nn.py tests/test_compile.py tests/test_op_adversarial.py
              tests/test_stripe_adversarial.py tests/test_stripe_native.py
              tests/test_pattern_adversarial.py tests/test_pattern_native.py
              tests/test_block1xn_native.py tests/test_eager_path.py tests/test_nchw_kernels.py
              tests/test_fuse_epilogue.py tests/test_op_epilogue.py)

path_under() {  # the path the kernels take with SPARSEKERNELS_CPU_SIMD=$1
  SPARSEKERNELS_CPU_SIMD="$1" "$PY" -c "import sparsekernels._C as C; print(C.cpu_simd_path())"
}

native=$(env -u SPARSEKERNELS_CPU_SIMD "$PY" -c "import sparsekernels._C as C; print(C.cpu_simd_path())")
echo "test_simd_paths: native path $native"
for path in avx512 avx2 generic; do
  [[ "$path" == "$native" ]] && continue
  if [[ "$(path_under "$path")" != "$path" ]]; then
    echo "test_simd_paths: $path not supported by this CPU, skipped"
    continue
  fi
  echo "test_simd_paths: kernel tests under SPARSEKERNELS_CPU_SIMD=$path"
  SPARSEKERNELS_CPU_SIMD="$path" "$PY" -m pytest -q "${KERNEL_TESTS[@]}" "$@"
done
