// CPU 1xN block conv: the kernels of block_conv_cpu_impl.h compiled for each
// instruction set in this one translation unit (built without -march flags),
// and the run-time dispatch between them. Only the baseline code runs before
// the CPU has been checked, so a CPU without AVX2/AVX-512 never sees those
// instructions.
#include "block_conv_cpu.h"

#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "block_conv_cpu_common.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SK_X86 1
#else
#define SK_X86 0
#endif

namespace sparsekernels {
namespace cpu {
namespace detail {

// Baseline: 16-byte vectors (SSE2 on x86-64, NEON elsewhere), no FMA.
namespace isa_generic {
constexpr int kVecBytes = 16;
constexpr int kAccRegs = 12;
constexpr int kMaxPix = 12;
template <typename V>
inline V vfma(V a, V b, V c) {
  return a * b + c;
}
#include "block_conv_cpu_impl.h"
}  // namespace isa_generic

#if SK_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
constexpr int kVecBytes = 32;
constexpr int kAccRegs = 12;  // 16 ymm: 12 accumulators + weights + broadcast
constexpr int kMaxPix = 12;
typedef float vf8 __attribute__((vector_size(32)));
typedef double vd4 __attribute__((vector_size(32)));
inline vf8 vfma(vf8 a, vf8 b, vf8 c) { return _mm256_fmadd_ps(a, b, c); }
inline vd4 vfma(vd4 a, vd4 b, vd4 c) { return _mm256_fmadd_pd(a, b, c); }
#include "block_conv_cpu_impl.h"
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma")
namespace isa_avx512 {
constexpr int kVecBytes = 64;
constexpr int kAccRegs = 24;  // 32 zmm
constexpr int kMaxPix = 14;   // pixel offsets live in the 16 GPRs
typedef float vf16 __attribute__((vector_size(64)));
typedef double vd8 __attribute__((vector_size(64)));
inline vf16 vfma(vf16 a, vf16 b, vf16 c) { return _mm512_fmadd_ps(a, b, c); }
inline vd8 vfma(vd8 a, vd8 b, vd8 c) { return _mm512_fmadd_pd(a, b, c); }
#include "block_conv_cpu_impl.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

enum class Isa { kGeneric, kAvx2, kAvx512 };

// Best path this CPU runs, possibly lowered by SPARSEKERNELS_CPU_SIMD (a
// request above what the CPU supports is ignored). Read on every call so
// tests can switch paths within one process.
Isa current_isa() {
#if SK_X86
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
    return Isa::kGeneric;
  }();
  Isa want = best;
  if (const char* env = std::getenv("SPARSEKERNELS_CPU_SIMD")) {
    if (!std::strcmp(env, "generic")) want = Isa::kGeneric;
    if (!std::strcmp(env, "avx2")) want = Isa::kAvx2;
    if (!std::strcmp(env, "avx512")) want = Isa::kAvx512;
  }
  return static_cast<int>(want) <= static_cast<int>(best) ? want : best;
#else
  return Isa::kGeneric;
#endif
}

#if SK_X86
#define SK_DISPATCH(fn, ...)                                            \
  switch (detail::current_isa()) {                                      \
    case detail::Isa::kAvx512: return detail::isa_avx512::fn(__VA_ARGS__); \
    case detail::Isa::kAvx2: return detail::isa_avx2::fn(__VA_ARGS__);  \
    default: return detail::isa_generic::fn(__VA_ARGS__);               \
  }
#else
#define SK_DISPATCH(fn, ...) return detail::isa_generic::fn(__VA_ARGS__);
#endif

}  // namespace detail

template <typename T>
void block_conv_forward(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* values, const T* input, Strides4 in_strides,
                        const T* bias, T* output, int num_threads) {
  SK_DISPATCH(forward<T>, geo, blocks, values, input, in_strides, bias, output, num_threads)
}

template <typename T>
void block_conv_grad_input(const ConvGeometry& geo, const Block1xN& blocks,
                           const T* values, const T* grad_out,
                           Strides4 go_strides, T* grad_input, int num_threads) {
  SK_DISPATCH(grad_input<T>, geo, blocks, values, grad_out, go_strides, grad_input,
              num_threads)
}

template <typename T>
void block_conv_grad_weight(const ConvGeometry& geo, const Block1xN& blocks,
                            const T* input, Strides4 in_strides,
                            const T* grad_out, Strides4 go_strides,
                            T* grad_values, int num_threads) {
  SK_DISPATCH(grad_weight<T>, geo, blocks, input, in_strides, grad_out, go_strides,
              grad_values, num_threads)
}

const char* simd_path() {
  switch (detail::current_isa()) {
    case detail::Isa::kAvx512: return "avx512";
    case detail::Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

#define SK_INSTANTIATE(T)                                                          \
  template void block_conv_forward<T>(const ConvGeometry&, const Block1xN&,        \
                                      const T*, const T*, Strides4, const T*, T*,  \
                                      int);                                        \
  template void block_conv_grad_input<T>(const ConvGeometry&, const Block1xN&,     \
                                         const T*, const T*, Strides4, T*, int);   \
  template void block_conv_grad_weight<T>(const ConvGeometry&, const Block1xN&,    \
                                          const T*, Strides4, const T*, Strides4,  \
                                          T*, int);
SK_INSTANTIATE(float)
SK_INSTANTIATE(double)
#undef SK_INSTANTIATE

}  // namespace cpu
}  // namespace sparsekernels
