// The storage dtypes of the CUDA kernels, as the host side names them. Plain
// C++ (no CUDA headers), so the bindings can map torch dtypes onto it.
#pragma once

namespace sparsekernels {
namespace cuda {

enum class DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

}  // namespace cuda
}  // namespace sparsekernels
