// Launch sizing and pixel indexing any sparsity kind's conv kernels can use:
// grid size for grid-stride loops, the int32 limit on spatial coordinates and
// the rest of the geometry the kernels assume, and where an output pixel's
// receptive field starts in the input. CUDA
// headers only (no torch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "sparsekernels/conv_geometry.h"

namespace sparsekernels {
namespace cuda {
namespace detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Grid for a grid-stride loop over `work` items (gridDim.x is at most
// 2^31 - 1; larger problems loop).
inline unsigned grid_for(int64_t work) {
  constexpr int64_t kMaxGrid = 0x7fffffff;
  return static_cast<unsigned>(work < kMaxGrid ? work : kMaxGrid);
}

// Spatial coordinates (ih, oh, ih + pad, ...) are int32 inside the kernels;
// flattened indices and element offsets stay int64.
inline bool spatial_fits_int32(const ConvGeometry& geo) {
  constexpr int64_t kLimit = int64_t{1} << 30;
  const int64_t reach_h = geo.pad_h + int64_t{geo.dil_h} * geo.kh;
  const int64_t reach_w = geo.pad_w + int64_t{geo.dil_w} * geo.kw;
  return geo.in_h < kLimit && geo.in_w < kLimit && geo.out_h < kLimit &&
         geo.out_w < kLimit && reach_h < kLimit && reach_w < kLimit &&
         geo.out_h * int64_t{geo.stride_h} < kLimit &&
         geo.out_w * int64_t{geo.stride_w} < kLimit;
}

// The geometry every kind's kernels assume: groups divide the channels,
// kernel, stride and dilation at least 1, padding and sizes not negative,
// spatial coordinates within int32. The entry points check it (with their
// kind's own conditions) before any launch.
inline bool geometry_ok(const ConvGeometry& geo) {
  return geo.groups >= 1 && geo.cin % geo.groups == 0 && geo.cout % geo.groups == 0 &&
         geo.kh >= 1 && geo.kw >= 1 && geo.stride_h >= 1 && geo.stride_w >= 1 &&
         geo.dil_h >= 1 && geo.dil_w >= 1 && geo.pad_h >= 0 && geo.pad_w >= 0 &&
         geo.batch >= 0 && geo.in_h >= 0 && geo.in_w >= 0 && geo.out_h >= 0 &&
         geo.out_w >= 0 && spatial_fits_int32(geo);
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

__device__ __forceinline__ PixelOrigin pixel_origin(const ConvGeometry& geo,
                                                    const Strides4& s, int64_t m) {
  const int64_t plane = geo.out_h * geo.out_w;
  if (m >= geo.batch * plane) return {false, 0, 0, 0};
  const int64_t b = m / plane;
  const int64_t p = m - b * plane;
  const int oh = static_cast<int>(p / geo.out_w);
  const int ow = static_cast<int>(p - oh * geo.out_w);
  const int ih0 = oh * geo.stride_h - geo.pad_h;
  const int iw0 = ow * geo.stride_w - geo.pad_w;
  return {true, ih0, iw0, b * s.n + ih0 * s.h + iw0 * s.w};
}

__device__ __forceinline__ bool inside(int y, int x, const ConvGeometry& geo) {
  return y >= 0 && y < geo.in_h && x >= 0 && x < geo.in_w;
}

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
