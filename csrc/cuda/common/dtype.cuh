// Storage and accumulation types of the CUDA kernels: per storage type T its
// accumulation type (fp32 for fp16/bf16) with load/store conversions, and the
// switch from a run-time DType to T. CUDA headers only (no torch).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/common/dtype.h"

// Applies X to every storage dtype the CUDA kernels are instantiated for.
#define SK_FOR_EACH_DTYPE(X) X(float) X(double) X(__half) X(__nv_bfloat16)

namespace sparsekernels {
namespace cuda {
namespace detail {

// Storage type T, accumulation type Acc (fp32 for the 16-bit types).
template <typename T>
struct Num;

template <>
struct Num<float> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const float* p) { return *p; }
  static __device__ __forceinline__ float store(Acc v) { return v; }
};

template <>
struct Num<double> {
  using Acc = double;
  static __device__ __forceinline__ Acc load(const double* p) { return *p; }
  static __device__ __forceinline__ double store(Acc v) { return v; }
};

template <>
struct Num<__half> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const __half* p) {
    return __half2float(*p);
  }
  static __device__ __forceinline__ __half store(Acc v) {
    return __float2half_rn(v);
  }
};

template <>
struct Num<__nv_bfloat16> {
  using Acc = float;
  static __device__ __forceinline__ Acc load(const __nv_bfloat16* p) {
    return __bfloat162float(*p);
  }
  static __device__ __forceinline__ __nv_bfloat16 store(Acc v) {
    return __float2bfloat16_rn(v);
  }
};

template <typename T>
using AccT = typename Num<T>::Acc;

template <typename T>
struct Tag {
  using type = T;
};

// Calls f(Tag<T>{}) for the storage type of `dtype`.
template <typename F>
cudaError_t with_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(Tag<float>{});
    case DType::kFloat64: return f(Tag<double>{});
    case DType::kFloat16: return f(Tag<__half>{});
    case DType::kBFloat16: return f(Tag<__nv_bfloat16>{});
  }
  return cudaErrorInvalidValue;
}

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
