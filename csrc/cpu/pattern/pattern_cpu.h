// Pattern-sparse conv2d on the CPU: forward, grad-input, grad-weight.
// Raw pointers only (no torch): the pybind11 layer checks and unpacks tensors.
// T is float or double. Every output buffer is fully overwritten (callers may
// hand in uninitialised memory). Work is split over `num_threads` OpenMP
// threads; the SIMD path is chosen at run time (cpu/common/isa.h).
#pragma once
#include <cstdint>

#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cpu {

// output[N, Cout, OH, OW] (NCHW contiguous) = clamp(conv(input, W) + bias).
// input is read through in_strides; bias may be null; values [nnz values] (flat).
// Reads the CSR; grad-input may read the transposed view. topology_id != 0:
// an id the bindings gave these (validated) index tensors, under which the
// weight plan's offsets are cached (pattern_plans.h); 0: built per call.
template <typename T>
void pattern_forward(const ConvGeometry& geo, const Patterns& patterns, const T* values,
                    const T* input, Strides4 in_strides, const T* bias,
                    const OutputClamp& clamp, T* output,
                    int num_threads, uint64_t topology_id = 0);

// grad_input[N, Cin, H, W] (NCHW contiguous) = conv_transpose(grad_out, W).
// topology_id: as for the forward (its own plan cached under it).
template <typename T>
void pattern_grad_input(const ConvGeometry& geo, const Patterns& patterns, const T* values,
                       const T* grad_out, Strides4 go_strides, T* grad_input, int num_threads,
                       uint64_t topology_id = 0);

// grad_values[nnz values]: the weight gradient at kept positions only.
// topology_id: as for the forward (the weight-free plan cached under it).
template <typename T>
void pattern_grad_weight(const ConvGeometry& geo, const Patterns& patterns, const T* input,
                        Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                        T* grad_values, int num_threads, uint64_t topology_id = 0);

}  // namespace cpu
}  // namespace sparsekernels
