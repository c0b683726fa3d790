// CPU feature detection behind SK_DISPATCH (see isa.h). In its own
// translation unit: current_isa() and simd_path() are defined once for all
// sparsity kinds.
#include "cpu/common/isa.h"

#include <cstdlib>
#include <cstring>

namespace sparsekernels {
namespace cpu {
namespace detail {

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

}  // namespace detail

const char* simd_path() {
  switch (detail::current_isa()) {
    case detail::Isa::kAvx512: return "avx512";
    case detail::Isa::kAvx2: return "avx2";
    default: return "generic";
  }
}

}  // namespace cpu
}  // namespace sparsekernels
