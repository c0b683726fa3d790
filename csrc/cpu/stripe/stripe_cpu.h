// Stripe-sparse conv2d on the CPU: forward, grad-input, grad-weight.
// Raw pointers only (no torch): the pybind11 layer checks and unpacks tensors.
// T is float or double. Every output buffer is fully overwritten (callers may
// hand in uninitialised memory). Work is split over `num_threads` OpenMP
// threads; the SIMD path is chosen at run time (cpu/common/isa.h).
#pragma once
#include "sparsekernels/stripe.h"

namespace sparsekernels {
namespace cpu {

// output[N, Cout, OH, OW] (NCHW contiguous) = clamp(conv(input, W) + bias).
// input is read through in_strides; bias may be null; values [nnz, Cin/g].
// Reads the CSR and the transposed view of `stripes`.
template <typename T>
void stripe_forward(const ConvGeometry& geo, const Stripes& stripes, const T* values,
                    const T* input, Strides4 in_strides, const T* bias,
                    const OutputClamp& clamp, T* output,
                    int num_threads);

// grad_input[N, Cin, H, W] (NCHW contiguous) = conv_transpose(grad_out, W).
template <typename T>
void stripe_grad_input(const ConvGeometry& geo, const Stripes& stripes, const T* values,
                       const T* grad_out, Strides4 go_strides, T* grad_input, int num_threads);

// grad_values[nnz, Cin/g]: the weight gradient at kept stripes only.
template <typename T>
void stripe_grad_weight(const ConvGeometry& geo, const Stripes& stripes, const T* input,
                        Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                        T* grad_values, int num_threads);

}  // namespace cpu
}  // namespace sparsekernels
