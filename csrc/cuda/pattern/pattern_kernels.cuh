// Shared pieces of the pattern-sparse CUDA kernels: the typed launchers behind
// the public entry points in pattern_cuda.h (each in its own .cu, explicitly
// instantiated there, so they compile in parallel), the CTA shape, and the
// per-tap geometry table every kernel stages in shared memory.
//
// A layer's kept weights are a flat list of values; value v belongs to kernel
// k (value_ptr), which sits at (output channel o, input channel c) and has
// tap t = value_tap[v] = kh * Kw + kw. The three passes:
//   forward     out[b, o, px] = bias[o] + sum_{k in row o} sum_{v of k}
//                               values[v] * x[b, g*Cin/g + c_k, px + tap_v]
//   grad-input  dX[b, c, ipx] = sum_{k in column c} sum_{v of k}
//                               values[v] * dY[b, o_k, opx(ipx, tap_v)]
//   grad-weight dW[v]         = sum_{b, px} dY[b, o_k, px] * x[b, c_k, px + tap_v]
// Forward and grad-input: a CTA is kWarps warps; warp w owns one channel
// (output channel, or input channel) and 32 * kPx pixels, lane l the pixels
// m0 + l + 32 j (j < kPx), so every activation load and every store is 32
// consecutive pixels (coalesced in NCHW). The warp walks its channel's kernel
// list (32 kernels' metadata loaded by the lanes at once and broadcast with
// __shfl_sync), each kernel's values with warp-uniform loads; a pruned weight
// is never read, and the work is the kept weights' MACs. Each output element
// has one writer and a fixed order of additions: deterministic, no atomics.
// All launchers return cudaSuccess when there is nothing to launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"
#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace pattern {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kPx = 4;              // pixels per lane (forward, grad-input)
constexpr int kTilePx = 32 * kPx;   // pixels per warp / CTA tile
constexpr unsigned kFullMask = 0xffffffffu;
// Resident CTAs per SM the forward and grad-input kernels are built for
// (<= 64 registers: 1024 threads per SM).
constexpr int kMinCtas = 3;
// A window row no tap shift (< 2^30, see spatial_fits_int32) brings into the
// image: marks a lane's pixels past the end.
constexpr int kNoRow = -(1 << 30) - 1;

// Taps whose geometry is staged in shared memory (a 16 x 16 kernel); larger
// taps compute it inline (same values, one integer division more).
constexpr int kTapTable = 256;

// (kh * dil_h, kw * dil_w): where tap t reads relative to the window origin.
__device__ __forceinline__ int2 tap_shift(const ConvGeometry& geo, int t) {
  const int kh = t / geo.kw;
  return make_int2(kh * geo.dil_h, (t - kh * geo.kw) * geo.dil_w);
}

// Per-tap geometry staged in shared memory: table[t] = entry_of(geo, t) for
// t < min(taps, kTapTable) (tap_shift in forward, the stride phases in
// grad-input); the caller synchronises before reading it.
template <typename Entry, typename EntryOf>
__device__ __forceinline__ void fill_tap_table(const ConvGeometry& geo, Entry* table,
                                               EntryOf entry_of) {
  const int n = geo.taps() < kTapTable ? geo.taps() : kTapTable;
  for (int t = threadIdx.x; t < n; t += blockDim.x) table[t] = entry_of(geo, t);
}

// Tap t's entry: from the table, or computed inline past its end.
template <typename Entry, typename EntryOf>
__device__ __forceinline__ Entry tap_lookup(const ConvGeometry& geo, const Entry* table,
                                            int t, EntryOf entry_of) {
  return t < kTapTable ? table[t] : entry_of(geo, t);
}

// Work items of forward and grad-input: (tile of kWarps channels, tile of
// kTilePx pixels), channel tiles fastest so CTAs resident together read one
// pixel tile. Warp w of item `item` owns channel channel(item, w), lane l the
// pixels first_pixel(item, l) + 32 j (j < kPx).
struct ChannelPixelTiles {
  int64_t ctiles;  // channel tiles
  int64_t work;    // items: ctiles x pixel tiles

  ChannelPixelTiles(int64_t channels, int64_t pixels)
      : ctiles(ceil_div(channels, kWarps)), work(ctiles * ceil_div(pixels, kTilePx)) {}

  __device__ __forceinline__ int64_t channel(int64_t item, int warp) const {
    return (item % ctiles) * kWarps + warp;
  }
  __device__ __forceinline__ int64_t first_pixel(int64_t item, int lane) const {
    return (item / ctiles) * kTilePx + lane;
  }
};

// The warp's walk over entries [begin, end) of a kernel list (a row's
// kernels in forward, a column's in grad-input), 32 at a time: lane l loads
// entry e0 + l's (a, value begin, value end) as load(e) -> int3, once per
// chunk, and the warp then runs body(a, vb, ve) for the chunk's entries in
// order, each broadcast from its lane by __shfl_sync. Warp-uniform.
template <typename Load, typename Body>
__device__ __forceinline__ void for_each_kernel(int32_t begin, int32_t end, int lane,
                                                Load load, Body body) {
  for (int32_t e0 = begin; e0 < end; e0 += 32) {
    const int32_t e = e0 + lane;
    const int3 mine = e < end ? load(e) : make_int3(0, 0, 0);
    const int n = end - e0 < 32 ? end - e0 : 32;
    for (int q = 0; q < n; ++q)
      body(__shfl_sync(kFullMask, mine.x, q), __shfl_sync(kFullMask, mine.y, q),
           __shfl_sync(kFullMask, mine.z, q));
  }
}

// Pixels m, m + step_px, m + 2 step_px, ... of a flattened (batch, rows,
// cols) space, as coordinates: one 64-bit division for the first (a function
// call: before any per-pixel state is live), then steps by carries with
// 32-bit arithmetic only. A lane's kPx pixels in forward and grad-input
// (step_px = 32), a thread's pixels in grad-weight (step_px = kThreads).
struct PixelWalk {
  int64_t b;
  int y, x;
  int dq, dr;  // a step moves (y, x) by (dq, dr) before the carries

  __device__ __forceinline__ PixelWalk(int64_t m, int64_t rows, int64_t cols, int step_px) {
    const int64_t plane = rows * cols;
    b = m / plane;
    const int64_t rem = m - b * plane;  // a plane may pass 2^31 pixels
    y = static_cast<int>(rem / cols);
    x = static_cast<int>(rem - int64_t{y} * cols);
    dq = step_px / static_cast<int>(cols);
    dr = step_px - dq * static_cast<int>(cols);
  }

  __device__ __forceinline__ void step(int rows, int cols) {
    x += dr;
    y += dq;
    if (x >= cols) {
      x -= cols;
      ++y;
    }
    if (y >= rows) {
      const int wraps = y / rows;
      b += wraps;
      y -= wraps * rows;
    }
  }
};

template <typename T>
cudaError_t forward(const ConvGeometry& geo, const Patterns& pat, const T* values,
                    const T* input, Strides4 in_strides, const T* bias, T* output,
                    cudaStream_t stream);

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Patterns& pat, const T* values,
                       const T* grad_out, Strides4 go_strides, T* grad_in,
                       cudaStream_t stream);

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Patterns& pat, const T* input,
                        Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                        T* grad_values, cudaStream_t stream);

}  // namespace pattern
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
