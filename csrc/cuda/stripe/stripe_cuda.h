// Stripe-sparse conv2d on CUDA: forward, grad-input, grad-weight.
// Host-callable launchers over raw device pointers; this header needs only the
// CUDA runtime, so the bindings include it without nvcc and the .cu files
// include no torch header. Every output buffer is fully overwritten.
// fp16/bf16 accumulate in fp32.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/common/dtype.h"
#include "sparsekernels/stripe.h"

namespace sparsekernels {
namespace cuda {

// output[N, Cout, OH, OW] NCHW contiguous; input read through in_strides;
// values [nnz, Cin/g]; bias (same dtype) may be null.
cudaError_t stripe_forward(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                           const void* values, const void* input, Strides4 in_strides,
                           const void* bias, void* output, cudaStream_t stream);

// grad_input[N, Cin, H, W] NCHW contiguous.
cudaError_t stripe_grad_input(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                              const void* values, const void* grad_out, Strides4 go_strides,
                              void* grad_input, cudaStream_t stream);

// grad_values[nnz, Cin/g]: the weight gradient at kept stripes only.
cudaError_t stripe_grad_weight(DType dtype, const ConvGeometry& geo, const Stripes& stripes,
                               const void* input, Strides4 in_strides, const void* grad_out,
                               Strides4 go_strides, void* grad_values, cudaStream_t stream);

}  // namespace cuda
}  // namespace sparsekernels
