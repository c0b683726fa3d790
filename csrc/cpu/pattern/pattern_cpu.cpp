// CPU pattern conv: the kernels of pattern_impl.h compiled once per
// instruction set (cpu/common/for_each_isa.inc) and the entry points that pick
// one at run time (SK_DISPATCH).
#include "cpu/pattern/pattern_cpu.h"

#include <omp.h>

#include "cpu/common/conv_layout.h"
#include "cpu/common/isa.h"
#include "cpu/pattern/pattern_plans.h"

#define SK_ISA_NAMESPACE sparsekernels::cpu::detail::pattern
#define SK_ISA_IMPL "cpu/pattern/pattern_impl.h"
#include "cpu/common/for_each_isa.inc"

namespace sparsekernels {
namespace cpu {

template <typename T>
void pattern_forward(const ConvGeometry& geo, const Patterns& patterns, const T* values,
                     const T* input, Strides4 in_strides, const T* bias,
                     const OutputClamp& clamp, T* output,
                     int num_threads, uint64_t topology_id) {
  SK_DISPATCH(detail::pattern, forward<T>, geo, patterns, values, input, in_strides, bias, clamp,
              output, num_threads, topology_id)
}

template <typename T>
void pattern_grad_input(const ConvGeometry& geo, const Patterns& patterns, const T* values,
                        const T* grad_out, Strides4 go_strides, T* grad_input,
                        int num_threads, uint64_t topology_id) {
  SK_DISPATCH(detail::pattern, grad_input<T>, geo, patterns, values, grad_out, go_strides,
              grad_input, num_threads, topology_id)
}

template <typename T>
void pattern_grad_weight(const ConvGeometry& geo, const Patterns& patterns, const T* input,
                         Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                         T* grad_values, int num_threads, uint64_t topology_id) {
  SK_DISPATCH(detail::pattern, grad_weight<T>, geo, patterns, input, in_strides, grad_out,
              go_strides, grad_values, num_threads, topology_id)
}

#define SK_INSTANTIATE(T)                                                                     \
  template void pattern_forward<T>(const ConvGeometry&, const Patterns&, const T*, const T*, \
                                   Strides4, const T*, const OutputClamp&, T*, int,         \
                                   uint64_t);                                               \
  template void pattern_grad_input<T>(const ConvGeometry&, const Patterns&, const T*,        \
                                      const T*, Strides4, T*, int, uint64_t);                \
  template void pattern_grad_weight<T>(const ConvGeometry&, const Patterns&, const T*,       \
                                       Strides4, const T*, Strides4, T*, int, uint64_t);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cpu
}  // namespace sparsekernels
