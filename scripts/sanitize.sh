#!/usr/bin/env bash
# Build sparsekernels._C under AddressSanitizer + UBSan (CPU kernels) into
# build/sanitize/ and run the tests that drive the C++ kernels against it:
# any out-of-bounds access or undefined behaviour the checks miss aborts the
# run. The in-place build the other scripts use is left untouched.
#
#   bash scripts/sanitize.sh [pytest args]     (default: the kernel and adversarial tests)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
out=$root/build/sanitize
cd "$root"
mkdir -p "$out"
SPARSEKERNELS_SANITIZE=1 MAX_JOBS=${MAX_JOBS:-2} "$PY" setup.py -q build_ext \
  --build-lib "$out/lib" --build-temp "$out/tmp" >"$out.log" 2>&1 || { cat "$out.log"; exit 1; }
# A copy of the package whose _C is the sanitized build; pytest runs from
# there so that this copy, not the in-place one, is imported.
rm -rf "$out/pkg" && mkdir -p "$out/pkg"
cp -r sparsekernels "$out/pkg/" && rm -f "$out"/pkg/sparsekernels/_C.*.so
cp "$out"/lib/sparsekernels/_C.*.so "$out/pkg/sparsekernels/"
[ $# -gt 0 ] || set -- "$root/tests/test_op_adversarial.py" "$root/tests/test_bad_inputs.py" \
  "$root/tests/test_sparse_conv.py" "$root/tests/test_nn.py" "$root/tests/test_stripe_adversarial.py" \
  "$root/tests/test_stripe_native.py" "$root/tests/test_pattern_adversarial.py" \
  "$root/tests/test_pattern_native.py" "$root/tests/test_block1xn_native.py" \
  "$root/tests/test_eager_path.py" "$root/tests/test_nchw_kernels.py" \
  "$root/tests/test_fuse_epilogue.py" -k "not triton"
cd "$out/pkg"
export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
# Fail loudly if the tests would import anything but the sanitized build.
"$PY" -c "import sparsekernels._C as c, sys; sys.exit(0 if c.__file__.startswith('$out/pkg/') else f'imported {c.__file__}')"
"$PY" -m pytest -q -p no:cacheprovider --rootdir "$root" "$@"
