// Public entry points: validate the geometry, pick the dtype and the kernel.
// The kernels live in forward_simt.cu, forward_mma.cu, grad_input.cu and
// grad_weight.cu.
#include "cuda/block_conv_cuda.h"

#include "cuda/block_conv_kernels.cuh"
#include "cuda/cuda_common.cuh"

namespace sparsekernels {
namespace cuda {
namespace {

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the storage type of `dtype`.
template <typename F>
cudaError_t with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(Tag<float>{});
    case DType::kFloat64: return f(Tag<double>{});
    case DType::kFloat16: return f(Tag<__half>{});
    case DType::kBFloat16: return f(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

// What the kernels assume; the Python layer checks the same, so failing
// here means a caller bypassed it.
cudaError_t check(const ConvGeometry& g, const Block1xN& b) {
  const bool ok = g.groups >= 1 && g.cin % g.groups == 0 &&
                  g.cout % g.groups == 0 && g.kh >= 1 && g.kw >= 1 &&
                  g.stride_h >= 1 && g.stride_w >= 1 && g.dil_h >= 1 &&
                  g.dil_w >= 1 && g.pad_h >= 0 && g.pad_w >= 0 &&
                  g.batch >= 0 && b.n >= 1 && b.nnzb >= 0 &&
                  b.rows_per_group ==
                      detail::ceil_div(g.cout_per_group(), b.n) &&
                  detail::spatial_fits_int32(g);
  return ok ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

cudaError_t block_conv_forward(DType dtype, const ConvGeometry& geo,
                               const Block1xN& blocks, const void* values,
                               const void* input, Strides4 in_strides,
                               const void* bias, void* output,
                               cudaStream_t stream) {
  if (const cudaError_t err = check(geo, blocks); err != cudaSuccess)
    return err;
  return with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    const auto* v = static_cast<const T*>(values);
    const auto* x = static_cast<const T*>(input);
    const auto* b = static_cast<const T*>(bias);
    auto* out = static_cast<T*>(output);
    if constexpr (sizeof(T) == 2) {
      if (blocks.n % 8 == 0 && detail::forward_mma_available())
        return detail::forward_mma<T>(geo, blocks, v, x, in_strides, b, out,
                                      stream);
    }
    return detail::forward_simt<T>(geo, blocks, v, x, in_strides, b, out,
                                   stream);
  });
}

cudaError_t block_conv_grad_input(DType dtype, const ConvGeometry& geo,
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
  return with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::grad_input<T>(geo, blocks, static_cast<const T*>(values),
                                 static_cast<const T*>(grad_out), go_strides,
                                 static_cast<T*>(grad_input), stream);
  });
}

cudaError_t block_conv_grad_weight(DType dtype, const ConvGeometry& geo,
                                   const Block1xN& blocks, const void* input,
                                   Strides4 in_strides, const void* grad_out,
                                   Strides4 go_strides, void* grad_values,
                                   cudaStream_t stream) {
  if (const cudaError_t err = check(geo, blocks); err != cudaSuccess)
    return err;
  return with_dtype(dtype, [&](auto tag) -> cudaError_t {
    using T = typename decltype(tag)::type;
    return detail::grad_weight<T>(geo, blocks, static_cast<const T*>(input),
                                  in_strides, static_cast<const T*>(grad_out),
                                  go_strides, static_cast<T*>(grad_values),
                                  stream);
  });
}

}  // namespace cuda
}  // namespace sparsekernels
