// 1xN block-sparse conv2d on the CPU: forward, grad-input, grad-weight.
// Raw pointers only (no torch): the pybind11 layer checks and unpacks tensors.
// T is float or double. Every output buffer is fully overwritten (callers may
// hand in uninitialised memory). Work is split over `num_threads` OpenMP
// threads; the SIMD path is chosen at run time (cpu/common/isa.h).
#pragma once
#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cpu {

// output[N, Cout, OH, OW] (NCHW contiguous) = clamp(conv(input, W) + bias +
// residual). input is read through in_strides; bias may be null; residual,
// null or NCHW contiguous like output (a fused residual add), must not alias it.
template <typename T>
void block1xn_forward(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                      const T* input, Strides4 in_strides, const T* bias,
                      const OutputClamp& clamp, const T* residual, T* output,
                      int num_threads);

// grad_input[N, Cin, H, W] (NCHW contiguous) = conv_transpose(grad_out, W).
// Needs blocks.col_ptr / block_idx / block_row.
template <typename T>
void block1xn_grad_input(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                         const T* grad_out, Strides4 go_strides, T* grad_input,
                         int num_threads);

// grad_values[nnzb, Kh, Kw, N]: the weight gradient at kept blocks only.
// Padded lanes of a short last row get 0.
template <typename T>
void block1xn_grad_weight(const ConvGeometry& geo, const Block1xN& blocks, const T* input,
                          Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                          T* grad_values, int num_threads);

}  // namespace cpu
}  // namespace sparsekernels
