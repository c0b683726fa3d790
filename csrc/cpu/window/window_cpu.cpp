// CPU window ops: the kernels of window_impl.h compiled once per instruction
// set (cpu/common/for_each_isa.inc) and the entry points that pick one at
// run time (SK_DISPATCH).
#include "cpu/window/window_cpu.h"

#include <cstddef>

#include "cpu/common/conv_layout.h"
#include "cpu/common/isa.h"
#include "cpu/common/wide_layout.h"

#define SK_ISA_NAMESPACE sparsekernels::cpu::detail::window
#define SK_ISA_IMPL "cpu/window/window_impl.h"
#include "cpu/common/for_each_isa.inc"

namespace sparsekernels {
namespace cpu {

template <typename T>
void depthwise_forward(const ConvGeometry& geo, const T* weight, const T* input,
                       Strides4 in_strides, const T* bias, const OutputClamp& clamp, T* output,
                       int num_threads) {
  SK_DISPATCH(detail::window, depthwise_forward<T>, geo, weight, input, in_strides, bias, clamp,
              output, num_threads)
}

template <typename T>
void max_pool_forward(const ConvGeometry& geo, const T* input, Strides4 in_strides, T* output,
                      int num_threads) {
  SK_DISPATCH(detail::window, max_pool_forward<T>, geo, input, in_strides, output, num_threads)
}

#define SK_INSTANTIATE(T)                                                                   \
  template void depthwise_forward<T>(const ConvGeometry&, const T*, const T*, Strides4,   \
                                     const T*, const OutputClamp&, T*, int);               \
  template void max_pool_forward<T>(const ConvGeometry&, const T*, Strides4, T*, int);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cpu
}  // namespace sparsekernels
