// Typed launchers behind the public entry points in block1xn_cuda.h; each
// lives in its own .cu (explicitly instantiated there) so the kernels compile
// in parallel. All return cudaSuccess when there is nothing to launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {

// The CUDA-core kernels handle a block row's N lanes in tiles of NT lanes,
// NT a compile-time power of two that divides N (so no tile straddles N and
// no lane mask is needed on weight loads); odd N falls back to NT = 1.
// Calls f(std::integral_constant<int, NT>{}).
template <typename F>
cudaError_t with_lane_tile(int32_t n, F&& f) {
  if (n % 32 == 0) return f(std::integral_constant<int, 32>{});
  if (n % 16 == 0) return f(std::integral_constant<int, 16>{});
  if (n % 8 == 0) return f(std::integral_constant<int, 8>{});
  if (n % 4 == 0) return f(std::integral_constant<int, 4>{});
  if (n % 2 == 0) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

// CUDA-core forward; every dtype and N.
template <typename T>
cudaError_t forward_simt(const ConvGeometry& geo, const Block1xN& blocks,
                         const T* values, const T* input, Strides4 in_strides,
                         const T* bias, T* output, cudaStream_t stream);

// Tensor-core forward; T is __half or __nv_bfloat16 and N % 8 == 0.
template <typename T>
cudaError_t forward_mma(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* values, const T* input, Strides4 in_strides,
                        const T* bias, T* output, cudaStream_t stream);

// True when the tensor-core kernel was built for (and so runs on) the
// current device, i.e. its machine code is sm_80 or newer.
bool forward_mma_available();

// Hopper tensor-core forward (block1xn_forward_sm90.cu); T is __half or
// __nv_bfloat16 and N % 16 == 0. Returns cudaErrorNotSupported, having
// launched nothing, when the problem does not fit it (input layout or
// alignment, halo too large for shared memory): the caller then falls back.
template <typename T>
cudaError_t forward_sm90(const ConvGeometry& geo, const Block1xN& blocks,
                         const T* values, const T* input, Strides4 in_strides,
                         const T* bias, T* output, cudaStream_t stream);

// True when the current device is sm_90 and the build carries sm_90a
// machine code for the Hopper kernel.
bool forward_sm90_available();

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Block1xN& blocks,
                       const T* values, const T* grad_out, Strides4 go_strides,
                       T* grad_in, cudaStream_t stream);

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* input, Strides4 in_strides, const T* grad_out,
                        Strides4 go_strides, T* grad_values,
                        cudaStream_t stream);

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
