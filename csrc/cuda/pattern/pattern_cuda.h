// Pattern-sparse conv2d on CUDA: forward, grad-input, grad-weight.
// Host-callable launchers over raw device pointers; this header needs only the
// CUDA runtime, so the bindings include it without nvcc and the .cu files
// include no torch header. Every output buffer is fully overwritten.
// fp16/bf16 accumulate in fp32.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/common/dtype.h"
#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cuda {

// output[N, Cout, OH, OW] NCHW contiguous; input read through in_strides;
// values [nnz values] (flat); bias (same dtype) may be null.
cudaError_t pattern_forward(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                           const void* values, const void* input, Strides4 in_strides,
                           const void* bias, void* output, cudaStream_t stream);

// grad_input[N, Cin, H, W] NCHW contiguous.
cudaError_t pattern_grad_input(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                              const void* values, const void* grad_out, Strides4 go_strides,
                              void* grad_input, cudaStream_t stream);

// grad_values[nnz values]: the weight gradient at kept positions only.
cudaError_t pattern_grad_weight(DType dtype, const ConvGeometry& geo, const Patterns& patterns,
                               const void* input, Strides4 in_strides, const void* grad_out,
                               Strides4 go_strides, void* grad_values, cudaStream_t stream);

}  // namespace cuda
}  // namespace sparsekernels
