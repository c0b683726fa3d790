// Public entry points of the stripe CUDA kernels: check what the kernels
// assume, pick the dtype, launch. The kernels live in stripe_forward.cu,
// stripe_grad_input.cu and stripe_grad_weight.cu (design notes there and in
// stripe_kernels.cuh).
#include "cuda/stripe/stripe_cuda.h"

#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"
#include "cuda/stripe/stripe_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace {

// What the kernels assume; the Python layer and the bindings check the same
// (and the index tensors' contents), so failing here means a caller
// bypassed them. stripe_idx / stripe_row / tap_idx are legitimately null
// when nnz == 0 (torch hands out null data pointers for empty tensors).
cudaError_t check(const ConvGeometry& geo, const Stripes& st) {
  const bool ok = detail::geometry_ok(geo) && st.nnz >= 0 && st.nnz <= INT32_MAX &&
                  st.tap_ptr != nullptr &&
                  (st.nnz == 0 ||
                   (st.stripe_idx != nullptr && st.stripe_row != nullptr));
  return ok ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

cudaError_t stripe_forward(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                           const void* values, const void* input, Strides4 in_strides,
                           const void* bias, void* output, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, stripes); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    // fp16/bf16 on tensor cores once a K step (32 channels) is mostly real
    // channels; fp32 and fp64 stay on the exact CUDA-core kernel (no TF32).
    if constexpr (sizeof(T) == 2) {
      if (geo.cin_per_group() >= 16 && detail::stripe::forward_mma_available())
        return detail::stripe::forward_mma<T>(
            geo, stripes, static_cast<const T*>(values), static_cast<const T*>(input),
            in_strides, static_cast<const T*>(bias), static_cast<T*>(output), stream);
    }
    return detail::stripe::forward<T>(
        geo, stripes, static_cast<const T*>(values), static_cast<const T*>(input),
        in_strides, static_cast<const T*>(bias), static_cast<T*>(output), stream);
  });
}

cudaError_t stripe_grad_input(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                              const void* values, const void* grad_out, Strides4 go_strides,
                              void* grad_input, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, stripes); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::stripe::grad_input<T>(
        geo, stripes, static_cast<const T*>(values), static_cast<const T*>(grad_out),
        go_strides, static_cast<T*>(grad_input), stream);
  });
}

cudaError_t stripe_grad_weight(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                               const void* input, Strides4 in_strides, const void* grad_out,
                               Strides4 go_strides, void* grad_values, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, stripes); err != cudaSuccess) return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::stripe::grad_weight<T>(
        geo, stripes, static_cast<const T*>(input), in_strides,
        static_cast<const T*>(grad_out), go_strides, static_cast<T*>(grad_values), stream);
  });
}

}  // namespace cuda
}  // namespace sparsekernels
