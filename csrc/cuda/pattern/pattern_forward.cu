// Pattern forward on CUDA cores (every dtype):
//   out[b, o, px] = bias[o] + sum over kept kernels k of row o (input channel
//                   c_k) and their values v (tap t_v) of
//                   values[v] * x[b, g*Cin/g + c_k, px shifted by t_v].
// Work item = (tile of kWarps output channels, tile of kTilePx output pixels
// flattened over batch x out_h x out_w), channel tiles fastest so CTAs
// resident together read one input tile (through L1/L2). Warp w owns output
// channel o = tile*kWarps + w; lane l the pixels m0 + l + 32 j. The warp
// walks row o's kernels: 32 kernels' (channel, value range) are loaded by the
// lanes at once and broadcast by __shfl_sync; each value (weight, tap) is a
// warp-uniform load; the tap's (dy, dx) come from a shared table. Each lane
// then does kPx bounds-checked loads and FMAs. The epilogue writes every
// pixel of the warp's channel (bias or 0 for a channel with no kernel).
#include "cuda/common/launch.cuh"
#include "cuda/pattern/pattern_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace pattern {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads, kMinCtas)
    forward_kernel(ConvGeometry geo, Patterns pat, const T* __restrict__ values,
                   const T* __restrict__ input, Strides4 is, const T* __restrict__ bias,
                   T* __restrict__ output, ChannelPixelTiles tiles) {
  using Acc = AccT<T>;
  __shared__ int2 taps_s[kTapTable];
  fill_tap_table(geo, taps_s, tap_shift);
  __syncthreads();  // the only barrier: warps run independently below

  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  const int64_t plane = geo.out_h * geo.out_w;
  const int64_t pixels = geo.batch * plane;
  const int64_t cin_g = geo.cin_per_group();
  const int64_t cout_g = geo.cout_per_group();
  const int out_h = static_cast<int>(geo.out_h);
  const int out_w = static_cast<int>(geo.out_w);

  for (int64_t w = blockIdx.x; w < tiles.work; w += gridDim.x) {
    const int64_t o = tiles.channel(w, warp);
    if (o >= geo.cout) continue;  // warp-uniform; no barrier follows
    const int64_t m0 = tiles.first_pixel(w, lane);

    // This lane's pixels: window origin and element offset of (b, 0, ih0, iw0).
    int ih0[kPx], iw0[kPx];
    int64_t off[kPx];
    Acc acc[kPx];
    PixelWalk pw(m0, geo.out_h, geo.out_w, 32);
#pragma unroll
    for (int j = 0; j < kPx; ++j) {
      if (j > 0) pw.step(out_h, out_w);
      // A pixel past the end gets a row no tap brings into the image.
      ih0[j] = m0 + 32 * j < pixels ? pw.y * geo.stride_h - geo.pad_h : kNoRow;
      iw0[j] = pw.x * geo.stride_w - geo.pad_w;
      off[j] = pw.b * is.n + int64_t{ih0[j]} * is.h + int64_t{iw0[j]} * is.w;
      acc[j] = Acc(0);
    }

    const T* xg = input + (o / cout_g) * cin_g * is.c;
    for_each_kernel(
        __ldg(pat.row_ptr + o), __ldg(pat.row_ptr + o + 1), lane,
        [&](int32_t k) {
          return make_int3(__ldg(pat.chan_idx + k), __ldg(pat.value_ptr + k),
                           __ldg(pat.value_ptr + k + 1));
        },
        [&](int32_t c, int32_t vb, int32_t ve) {
          const T* xc = xg + int64_t{c} * is.c;
          for (int32_t v = vb; v < ve; ++v) {
            const Acc wv = Num<T>::load(values + v);
            const int2 d = tap_lookup(geo, taps_s, __ldg(pat.value_tap + v), tap_shift);
            const int64_t toff = int64_t{d.x} * is.h + int64_t{d.y} * is.w;
#pragma unroll
            for (int j = 0; j < kPx; ++j) {
              // Only formed (and read) inside the image: the offset may
              // point outside the tensor otherwise.
              if (inside(ih0[j] + d.x, iw0[j] + d.y, geo))
                acc[j] += wv * Num<T>::load(xc + off[j] + toff);
            }
          }
        });

    const Acc bv = bias != nullptr ? Num<T>::load(bias + o) : Acc(0);
    // The same walk again (cheaper than keeping its coordinates live).
    PixelWalk ps(m0, geo.out_h, geo.out_w, 32);
#pragma unroll
    for (int j = 0; j < kPx; ++j) {
      if (j > 0) ps.step(out_h, out_w);
      if (m0 + 32 * j < pixels)
        output[(ps.b * geo.cout + o) * plane + int64_t{ps.y} * out_w + ps.x] =
            Num<T>::store(acc[j] + bv);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t forward(const ConvGeometry& geo, const Patterns& pat, const T* values,
                    const T* input, Strides4 in_strides, const T* bias, T* output,
                    cudaStream_t stream) {
  const ChannelPixelTiles tiles(geo.cout, geo.batch * geo.out_h * geo.out_w);
  if (tiles.work == 0) return cudaSuccess;
  forward_kernel<T><<<grid_for(tiles.work), kThreads, 0, stream>>>(
      geo, pat, values, input, in_strides, bias, output, tiles);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                          \
  template cudaError_t forward<T>(const ConvGeometry&, const Patterns&, const T*,  \
                                  const T*, Strides4, const T*, T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace pattern
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
