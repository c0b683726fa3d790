// The pieces of an RS wgmma (A from registers, B from shared memory) that
// CuTe's atom leaves to the caller: the call with the accumulators spread
// as its operands, and the operand fences that keep the compiler from
// moving register reads and writes across an asynchronous wgmma. Shared by
// the Hopper 1xN forward and the design probe (benchmarks/gpu_loop_probe.cu).
#pragma once
#include <cstddef>
#include <cstdint>
#include <utility>

#include <cute/arch/mma_sm90.hpp>

namespace sparsekernels {
namespace cuda {
namespace detail {

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// acc += A (4 registers of a m64nNk16 fragment) x B (descriptor), Op a
// CuTe SM90 RS atom of N = 2 * sizeof...(I) accumulators a thread.
template <class Op, size_t... I>
__device__ __forceinline__ void wgmma_rs(const uint32_t (&a)[4], uint64_t desc,
                                         float (&acc)[sizeof...(I)], std::index_sequence<I...>) {
  Op::fma(a[0], a[1], a[2], a[3], desc, acc[I]..., cute::SM90::GMMA::ScaleOut::One);
}

template <typename R, int N>
__device__ __forceinline__ void fence_regs(R (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) cute::warpgroup_fence_operand(r[i]);
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
