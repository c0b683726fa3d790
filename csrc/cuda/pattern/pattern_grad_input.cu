// Pattern grad-input on CUDA cores (every dtype), a gather (no atomics):
//   dX[b, c, ih, iw] = sum over the kernels k reading input channel c (the
//     transposed view: col_ptr / kernel_idx / kernel_row, output channel o_k)
//     and their values v (tap t_v = (kh, kw)) of
//     values[v] * dY[b, o_k, oh, ow],  oh * stride_h = ih + pad_h - kh * dil_h
// (likewise ow), where the stride divides and (oh, ow) is inside the output.
// Work item = (tile of kWarps input channels, tile of kTilePx input pixels
// flattened over batch x in_h x in_w), channel tiles fastest. Warp w owns
// input channel c, lane l the pixels m0 + l + 32 j. No division per (pixel,
// tap): with a = (ih + pad_h) / stride_h, ra = (ih + pad_h) % stride_h per
// pixel (once per tile) and q = kh*dil_h / stride_h, r = kh*dil_h % stride_h
// per tap (a shared table), the tap reaches output row a - q iff ra == r and
// 0 <= a - q < out_h. Every element of the warp's channel is written (0 where
// nothing reads it).
#include "cuda/common/launch.cuh"
#include "cuda/pattern/pattern_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace pattern {
namespace {

// (q_h, r_h, q_w, r_w) of tap t: its shift divided by the stride.
__device__ __forceinline__ int4 tap_phase(const ConvGeometry& geo, int t) {
  const int2 d = tap_shift(geo, t);
  return make_int4(d.x / geo.stride_h, d.x % geo.stride_h, d.y / geo.stride_w,
                   d.y % geo.stride_w);
}

template <typename T>
__global__ void __launch_bounds__(kThreads, kMinCtas)
    grad_input_kernel(ConvGeometry geo, Patterns pat, const T* __restrict__ values,
                      const T* __restrict__ grad_out, Strides4 gs, T* __restrict__ grad_in,
                      ChannelPixelTiles tiles) {
  using Acc = AccT<T>;
  __shared__ int4 phase_s[kTapTable];
  fill_tap_table(geo, phase_s, tap_phase);
  __syncthreads();  // the only barrier: warps run independently below

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t in_plane = geo.in_h * geo.in_w;
  const int64_t in_pixels = geo.batch * in_plane;
  const int out_h = static_cast<int>(geo.out_h);
  const int out_w = static_cast<int>(geo.out_w);
  const int in_h = static_cast<int>(geo.in_h);
  const int in_w = static_cast<int>(geo.in_w);

  for (int64_t w = blockIdx.x; w < tiles.work; w += gridDim.x) {
    const int64_t c = tiles.channel(w, warp);
    if (c >= geo.cin) continue;  // warp-uniform; no barrier follows
    const int64_t m0 = tiles.first_pixel(w, lane);

    // This lane's pixels: batch offset into dY and the stride phases.
    bool ok[kPx];
    int ah[kPx], rh[kPx], aw[kPx], rw[kPx];
    int64_t boff[kPx];
    Acc acc[kPx];
    PixelWalk pw(m0, geo.in_h, geo.in_w, 32);
#pragma unroll
    for (int j = 0; j < kPx; ++j) {
      if (j > 0) pw.step(in_h, in_w);
      ok[j] = m0 + 32 * j < in_pixels;
      const int ih = pw.y, iw = pw.x;
      const int64_t b = pw.b;
      ah[j] = (ih + geo.pad_h) / geo.stride_h;
      rh[j] = (ih + geo.pad_h) - ah[j] * geo.stride_h;
      aw[j] = (iw + geo.pad_w) / geo.stride_w;
      rw[j] = (iw + geo.pad_w) - aw[j] * geo.stride_w;
      boff[j] = b * gs.n;
      acc[j] = Acc(0);
    }

    for_each_kernel(
        __ldg(pat.col_ptr + c), __ldg(pat.col_ptr + c + 1), lane,
        [&](int32_t e) {
          const int32_t k = __ldg(pat.kernel_idx + e);
          return make_int3(__ldg(pat.kernel_row + e), __ldg(pat.value_ptr + k),
                           __ldg(pat.value_ptr + k + 1));
        },
        [&](int32_t o, int32_t vb, int32_t ve) {
          const T* go = grad_out + int64_t{o} * gs.c;
          for (int32_t v = vb; v < ve; ++v) {
            const Acc wv = Num<T>::load(values + v);
            const int4 ph = tap_lookup(geo, phase_s, __ldg(pat.value_tap + v), tap_phase);
#pragma unroll
            for (int j = 0; j < kPx; ++j) {
              const int oh = ah[j] - ph.x, ow = aw[j] - ph.z;
              if (ok[j] && rh[j] == ph.y && rw[j] == ph.w && oh >= 0 && oh < out_h &&
                  ow >= 0 && ow < out_w)
                acc[j] += wv * Num<T>::load(go + boff[j] + int64_t{oh} * gs.h +
                                            int64_t{ow} * gs.w);
            }
          }
        });

    PixelWalk ps(m0, geo.in_h, geo.in_w, 32);
#pragma unroll
    for (int j = 0; j < kPx; ++j) {
      if (j > 0) ps.step(in_h, in_w);
      if (m0 + 32 * j < in_pixels)
        grad_in[(ps.b * geo.cin + c) * in_plane + int64_t{ps.y} * in_w + ps.x] =
            Num<T>::store(acc[j]);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Patterns& pat, const T* values,
                       const T* grad_out, Strides4 go_strides, T* grad_in,
                       cudaStream_t stream) {
  const ChannelPixelTiles tiles(geo.cin, geo.batch * geo.in_h * geo.in_w);
  if (tiles.work == 0) return cudaSuccess;
  grad_input_kernel<T><<<grid_for(tiles.work), kThreads, 0, stream>>>(
      geo, pat, values, grad_out, go_strides, grad_in, tiles);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                            \
  template cudaError_t grad_input<T>(const ConvGeometry&, const Patterns&, const T*, \
                                     const T*, Strides4, T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace pattern
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
