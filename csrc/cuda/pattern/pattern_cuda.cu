// Public entry points of the pattern CUDA kernels: check what the kernels
// assume, pick the dtype, launch. The kernels live in pattern_forward.cu,
// pattern_grad_input.cu and pattern_grad_weight.cu (design notes there and in
// pattern_kernels.cuh).
#include "cuda/pattern/pattern_cuda.h"

#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"
#include "cuda/pattern/pattern_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace {

// What the kernels assume; the Python layer and the bindings check the same
// (and the index tensors' contents), so failing here means a caller
// bypassed them. The per-kernel and per-value arrays are legitimately null
// when they are empty (torch hands out null data pointers for empty tensors);
// the CSR offsets (cout + 1, nnz + 1, cin + 1 entries) never are.
cudaError_t check(const ConvGeometry& geo, const Patterns& pat) {
  const bool ok = detail::geometry_ok(geo) && geo.cout >= 1 && geo.cin >= 1 &&
                  pat.nnz >= 0 && pat.nnz <= INT32_MAX && pat.nnz_values >= 0 &&
                  pat.nnz_values <= INT32_MAX && geo.cout <= INT32_MAX &&
                  pat.row_ptr != nullptr && pat.value_ptr != nullptr &&
                  pat.col_ptr != nullptr &&
                  (pat.nnz == 0 || (pat.chan_idx != nullptr && pat.kernel_idx != nullptr &&
                                    pat.kernel_row != nullptr)) &&
                  (pat.nnz_values == 0 || pat.value_tap != nullptr);
  return ok ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

cudaError_t pattern_forward(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                            const void* values, const void* input, Strides4 in_strides,
                            const void* bias, void* output, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, patterns); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::pattern::forward<T>(
        geo, patterns, static_cast<const T*>(values), static_cast<const T*>(input),
        in_strides, static_cast<const T*>(bias), static_cast<T*>(output), stream);
  });
}

cudaError_t pattern_grad_input(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                               const void* values, const void* grad_out, Strides4 go_strides,
                               void* grad_input, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, patterns); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::pattern::grad_input<T>(
        geo, patterns, static_cast<const T*>(values), static_cast<const T*>(grad_out),
        go_strides, static_cast<T*>(grad_input), stream);
  });
}

cudaError_t pattern_grad_weight(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                                const void* input, Strides4 in_strides, const void* grad_out,
                                Strides4 go_strides, void* grad_values, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, patterns); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::pattern::grad_weight<T>(
        geo, patterns, static_cast<const T*>(input), in_strides,
        static_cast<const T*>(grad_out), go_strides, static_cast<T*>(grad_values), stream);
  });
}

}  // namespace cuda
}  // namespace sparsekernels
