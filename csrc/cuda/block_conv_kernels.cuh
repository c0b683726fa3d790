// Typed launchers behind the public entry points in block_conv_cuda.h; each
// lives in its own .cu (explicitly instantiated there) so the kernels compile
// in parallel. All return cudaSuccess when there is nothing to launch.
#pragma once
#include <cuda_runtime.h>

#include "sparsekernels/block_1xn.h"

namespace sparsekernels {
namespace cuda {
namespace detail {

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

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Block1xN& blocks,
                       const T* values, const T* grad_out, Strides4 go_strides,
                       T* grad_in, cudaStream_t stream);

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* input, Strides4 in_strides, const T* grad_out,
                        Strides4 go_strides, T* grad_values,
                        cudaStream_t stream);

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
