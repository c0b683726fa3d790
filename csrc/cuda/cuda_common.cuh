// Pieces shared by the 1xN block-sparse conv kernels: dtype traits, the
// lane-tile choice, launch sizing. CUDA headers only (no torch).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "sparsekernels/block_1xn.h"

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

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work` items (gridDim.x is at most
// 2^31 - 1; larger problems loop).
inline unsigned grid_for(int64_t work) {
  constexpr int64_t kMaxGrid = 0x7fffffff;
  return static_cast<unsigned>(work < kMaxGrid ? work : kMaxGrid);
}

// Spatial coordinates (ih, oh, ih + pad, ...) are int32 inside the kernels;
// flattened indices and element offsets stay int64.
inline bool spatial_fits_int32(const ConvGeometry& g) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  const int64_t reach_h = g.pad_h + int64_t{g.dil_h} * g.kh;
  const int64_t reach_w = g.pad_w + int64_t{g.dil_w} * g.kw;
  return g.in_h < kLimit && g.in_w < kLimit && g.out_h < kLimit &&
         g.out_w < kLimit && reach_h < kLimit && reach_w < kLimit &&
         g.out_h * int64_t{g.stride_h} < kLimit &&
         g.out_w * int64_t{g.stride_w} < kLimit;
}

// The CUDA-core kernels handle a block row's N lanes in tiles of NT lanes,
// NT a compile-time power of two that divides N (so no tile straddles N and
// no lane mask is needed on weight loads); odd N falls back to NT = 1.
// Calls f(std::integral_constant<int, NT>{}).
template <typename F>
cudaError_t with_lane_tile(int32_t n, F&& f) {
  if (n % 32 == 0) return f(std::integral_constant<int, 32>{});
  if (n % 16 == 0) return f(std::integral_constant<int, 16>{});
  if (n % 8 == 0) return f(std::integral_constant<int, 8>{});
  if (n % 4 == 0) return f(std::integral_constant<int, 4>{});
  if (n % 2 == 0) return f(std::integral_constant<int, 2>{});
  return f(std::integral_constant<int, 1>{});
}

// Where output pixel m (flattened over batch x out_h x out_w) starts reading
// the input: the top-left input coordinate of its receptive field and the
// element offset of (batch, channel 0, ih0, iw0). Tap (kh, kw) of channel c
// then sits at offset + c*s.c + kh*dil_h*s.h + kw*dil_w*s.w.
struct PixelOrigin {
  bool ok;  // m < batch * out_h * out_w
  int ih0, iw0;
  int64_t offset;
};

__device__ __forceinline__ PixelOrigin pixel_origin(const ConvGeometry& g,
                                                    const Strides4& s,
                                                    int64_t m) {
  const int64_t plane = g.out_h * g.out_w;
  if (m >= g.batch * plane) return {false, 0, 0, 0};
  const int64_t b = m / plane;
  const int64_t p = m - b * plane;
  const int oh = static_cast<int>(p / g.out_w);
  const int ow = static_cast<int>(p - oh * g.out_w);
  const int ih0 = oh * g.stride_h - g.pad_h;
  const int iw0 = ow * g.stride_w - g.pad_w;
  return {true, ih0, iw0, b * s.n + ih0 * s.h + iw0 * s.w};
}

__device__ __forceinline__ bool inside(int y, int x, const ConvGeometry& g) {
  return y >= 0 && y < g.in_h && x >= 0 && x < g.in_w;
}

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
