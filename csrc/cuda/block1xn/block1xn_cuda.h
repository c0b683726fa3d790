// 1xN block-sparse conv2d on CUDA: forward, grad-input, grad-weight.
// Host-callable launchers over raw device pointers; this header needs only the
// CUDA runtime, so the bindings include it without nvcc and the .cu files
// include no torch header. Every output buffer is fully overwritten.
// fp16/bf16 accumulate in fp32.
#pragma once
#include <cuda_runtime_api.h>

#include "cuda/common/dtype.h"
#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cuda {

// output[N, Cout, OH, OW] NCHW contiguous; input read through in_strides;
// bias (same dtype) may be null.
cudaError_t block1xn_forward(DType dtype, const ConvGeometry& geo,
                             const Block1xN& blocks, const void* values,
                             const void* input, Strides4 in_strides,
                             const void* bias, void* output,
                             cudaStream_t stream);

// grad_input[N, Cin, H, W] NCHW contiguous; needs the transposed topology.
cudaError_t block1xn_grad_input(DType dtype, const ConvGeometry& geo,
                                const Block1xN& blocks, const void* values,
                                const void* grad_out, Strides4 go_strides,
                                void* grad_input, cudaStream_t stream);

// grad_values[nnzb, Kh, Kw, N]; padded lanes of a short last row get 0.
cudaError_t block1xn_grad_weight(DType dtype, const ConvGeometry& geo,
                                 const Block1xN& blocks, const void* input,
                                 Strides4 in_strides, const void* grad_out,
                                 Strides4 go_strides, void* grad_values,
                                 cudaStream_t stream);

// Whether the bf16/fp16 forward runs the Hopper (sm_90a, wgmma) kernel on
// the current device: the build compiled it and the device is sm_90.
bool block1xn_hopper_forward_available();

}  // namespace cuda
}  // namespace sparsekernels
