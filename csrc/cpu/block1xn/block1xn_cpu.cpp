// CPU 1xN block conv: the kernels of block1xn_impl.h compiled once per
// instruction set (cpu/common/for_each_isa.inc) and the entry points that
// pick one at run time (SK_DISPATCH).
#include "cpu/block1xn/block1xn_cpu.h"

#include <omp.h>

#include "cpu/block1xn/block1xn_plans.h"
#include "cpu/common/conv_layout.h"
#include "cpu/common/isa.h"

#define SK_ISA_NAMESPACE sparsekernels::cpu::detail::block1xn
#define SK_ISA_IMPL "cpu/block1xn/block1xn_impl.h"
#include "cpu/common/for_each_isa.inc"

namespace sparsekernels {
namespace cpu {

template <typename T>
void block1xn_forward(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                      const T* input, Strides4 in_strides, const T* bias,
                      const OutputClamp& clamp, const T* residual, T* output,
                      int num_threads) {
  SK_DISPATCH(detail::block1xn, forward<T>, geo, blocks, values, input, in_strides, bias, clamp,
              residual, output, num_threads)
}

template <typename T>
void block1xn_grad_input(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                         const T* grad_out, Strides4 go_strides, T* grad_input,
                         int num_threads) {
  SK_DISPATCH(detail::block1xn, grad_input<T>, geo, blocks, values, grad_out, go_strides,
              grad_input, num_threads)
}

template <typename T>
void block1xn_grad_weight(const ConvGeometry& geo, const Block1xN& blocks, const T* input,
                          Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                          T* grad_values, int num_threads) {
  SK_DISPATCH(detail::block1xn, grad_weight<T>, geo, blocks, input, in_strides, grad_out,
              go_strides, grad_values, num_threads)
}

#define SK_INSTANTIATE(T)                                                                  \
  template void block1xn_forward<T>(const ConvGeometry&, const Block1xN&, const T*,       \
                                    const T*, Strides4, const T*, const OutputClamp&,      \
                                    const T*, T*, int);                                    \
  template void block1xn_grad_input<T>(const ConvGeometry&, const Block1xN&, const T*,    \
                                       const T*, Strides4, T*, int);                       \
  template void block1xn_grad_weight<T>(const ConvGeometry&, const Block1xN&, const T*,   \
                                        Strides4, const T*, Strides4, T*, int);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cpu
}  // namespace sparsekernels
