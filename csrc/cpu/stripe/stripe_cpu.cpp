// CPU stripe conv: the kernels of stripe_impl.h compiled once per instruction
// set (cpu/common/for_each_isa.inc) and the entry points that pick one at run
// time (SK_DISPATCH).
#include "cpu/stripe/stripe_cpu.h"

#include <omp.h>

#include "cpu/common/conv_layout.h"
#include "cpu/common/isa.h"
#include "cpu/stripe/stripe_plans.h"

#define SK_ISA_NAMESPACE sparsekernels::cpu::detail::stripe
#define SK_ISA_IMPL "cpu/stripe/stripe_impl.h"
#include "cpu/common/for_each_isa.inc"

namespace sparsekernels {
namespace cpu {

template <typename T>
void stripe_forward(const ConvGeometry& geo, const Stripes& stripes, const T* values,
                    const T* input, Strides4 in_strides, const T* bias,
                    const OutputClamp& clamp, T* output,
                    int num_threads) {
  SK_DISPATCH(detail::stripe, forward<T>, geo, stripes, values, input, in_strides, bias, clamp,
              output, num_threads)
}

template <typename T>
void stripe_grad_input(const ConvGeometry& geo, const Stripes& stripes, const T* values,
                       const T* grad_out, Strides4 go_strides, T* grad_input, int num_threads) {
  SK_DISPATCH(detail::stripe, grad_input<T>, geo, stripes, values, grad_out, go_strides,
              grad_input, num_threads)
}

template <typename T>
void stripe_grad_weight(const ConvGeometry& geo, const Stripes& stripes, const T* input,
                        Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                        T* grad_values, int num_threads) {
  SK_DISPATCH(detail::stripe, grad_weight<T>, geo, stripes, input, in_strides, grad_out,
              go_strides, grad_values, num_threads)
}

#define SK_INSTANTIATE(T)                                                                   \
  template void stripe_forward<T>(const ConvGeometry&, const Stripes&, const T*, const T*, \
                                  Strides4, const T*, const OutputClamp&, T*, int);        \
  template void stripe_grad_input<T>(const ConvGeometry&, const Stripes&, const T*,        \
                                     const T*, Strides4, T*, int);                         \
  template void stripe_grad_weight<T>(const ConvGeometry&, const Stripes&, const T*,       \
                                      Strides4, const T*, Strides4, T*, int);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cpu
}  // namespace sparsekernels
