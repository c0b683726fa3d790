// Run-time choice of the CPU instruction set, shared by every sparsity kind.
// A kind's kernels are compiled once per ISA (cpu/common/for_each_isa.inc) in
// one translation unit built without -march flags; SK_DISPATCH calls the copy
// for the best ISA this CPU runs, so a CPU without AVX2/AVX-512 never executes
// those instructions. The ISAs listed here, in for_each_isa.inc and in isa.cpp
// must agree.
#pragma once

#if defined(__x86_64__) || defined(__i386__)
#define SK_X86 1
#else
#define SK_X86 0
#endif

namespace sparsekernels {
namespace cpu {
namespace detail {

enum class Isa { kGeneric, kAvx2, kAvx512 };

// Best ISA this CPU runs, possibly lowered by SPARSEKERNELS_CPU_SIMD
// ("generic", "avx2", "avx512"; a request above what the CPU supports is
// ignored). Reads the variable on every call so tests can switch paths within
// one process.
Isa current_isa();

}  // namespace detail

// Name of the SIMD path the kernels take now ("avx512", "avx2", "generic").
const char* simd_path();

}  // namespace cpu
}  // namespace sparsekernels

// `return ns::isa_<best>::fn(args...)`, ns being the SK_ISA_NAMESPACE a kind's
// kernels were compiled into.
#if SK_X86
#define SK_DISPATCH(ns, fn, ...)                                  \
  switch (::sparsekernels::cpu::detail::current_isa()) {          \
    case ::sparsekernels::cpu::detail::Isa::kAvx512:              \
      return ns::isa_avx512::fn(__VA_ARGS__);                     \
    case ::sparsekernels::cpu::detail::Isa::kAvx2:                \
      return ns::isa_avx2::fn(__VA_ARGS__);                       \
    default: return ns::isa_generic::fn(__VA_ARGS__);             \
  }
#else
#define SK_DISPATCH(ns, fn, ...) return ns::isa_generic::fn(__VA_ARGS__);
#endif
