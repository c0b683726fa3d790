// Public entry points: validate the geometry, pick the dtype and the kernel.
// The kernels live in block1xn_forward_simt.cu, block1xn_forward_mma.cu,
// block1xn_forward_sm90.cu, block1xn_grad_input.cu and block1xn_grad_weight.cu.
#include "cuda/block1xn/block1xn_cuda.h"

#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace {

// What the kernels assume; the Python layer checks the same, so failing
// here means a caller bypassed it.
cudaError_t check(const ConvGeometry& geo, const Block1xN& blocks) {
  const bool ok = detail::geometry_ok(geo) && blocks.n >= 1 && blocks.nnzb >= 0 &&
                  blocks.rows_per_group ==
                      detail::ceil_div(geo.cout_per_group(), blocks.n);
  return ok ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

cudaError_t block1xn_forward(DType dtype, const ConvGeometry& geo,
                             const Block1xN& blocks, const void* values,
                             const void* input, Strides4 in_strides,
                             const void* bias, void* output,
                             cudaStream_t stream) {
  if (const cudaError_t err = check(geo, blocks); err != cudaSuccess)
    return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const auto* v = static_cast<const T*>(values);
    const auto* x = static_cast<const T*>(input);
    const auto* b = static_cast<const T*>(bias);
    auto* out = static_cast<T*>(output);
    if constexpr (sizeof(T) == 2) {
#if defined(SK_WITH_SM90)
      // Hopper first (wgmma, sm_90a builds); it declines what it cannot
      // take, which then runs on the sm_80 mma.sync kernel. SK_WITH_SM90:
      // the build found the CuTe headers and compiled that kernel.
      if (blocks.n % 16 == 0 && detail::block1xn::forward_sm90_available()) {
        const cudaError_t err = detail::block1xn::forward_sm90<T>(
            geo, blocks, v, x, in_strides, b, out, stream);
        if (err != cudaErrorNotSupported) return err;
      }
#endif
      if (blocks.n % 8 == 0 && detail::block1xn::forward_mma_available())
        return detail::block1xn::forward_mma<T>(geo, blocks, v, x, in_strides,
                                                b, out, stream);
    }
    return detail::block1xn::forward_simt<T>(geo, blocks, v, x, in_strides, b,
                                             out, stream);
  });
}

bool block1xn_hopper_forward_available() {
#if defined(SK_WITH_SM90)
  return detail::block1xn::forward_sm90_available();
#else
  return false;
#endif
}

cudaError_t block1xn_grad_input(DType dtype, const ConvGeometry& geo,
                                const Block1xN& blocks, const void* values,
                                const void* grad_out, Strides4 go_strides,
                                void* grad_input, cudaStream_t stream) {
  if (const cudaError_t err = check(geo, blocks); err != cudaSuccess)
    return err;
  // block_idx / block_row are legitimately null when nnzb == 0 (torch hands
  // out null data pointers for empty tensors).
  if (blocks.col_ptr == nullptr ||
      (blocks.nnzb > 0 &&
       (blocks.block_idx == nullptr || blocks.block_row == nullptr)))
    return cudaErrorInvalidValue;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::block1xn::grad_input<T>(
        geo, blocks, static_cast<const T*>(values),
        static_cast<const T*>(grad_out), go_strides,
        static_cast<T*>(grad_input), stream);
  });
}

cudaError_t block1xn_grad_weight(DType dtype, const ConvGeometry& geo,
                                 const Block1xN& blocks, const void* input,
                                 Strides4 in_strides, const void* grad_out,
                                 Strides4 go_strides, void* grad_values,
                                 cudaStream_t stream) {
  if (const cudaError_t err = check(geo, blocks); err != cudaSuccess)
    return err;
  return detail::with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::block1xn::grad_weight<T>(
        geo, blocks, static_cast<const T*>(input), in_strides,
        static_cast<const T*>(grad_out), go_strides,
        static_cast<T*>(grad_values), stream);
  });
}

}  // namespace cuda
}  // namespace sparsekernels
