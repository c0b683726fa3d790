// Pattern grad-weight on CUDA cores (every dtype), kept weights only:
//   dW[v] = sum over (b, oh, ow) of dY[b, o_k, oh, ow] *
//           x[b, g*Cin/g + c_k, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
// for value v of kernel k (output channel o_k, input channel c_k, tap
// t_v = (kh, kw)). Work item = (kernel k, split s): the CTA owns every value
// of kernel k and the s-th range of the P = batch x out_h x out_w pixels
// (split-K over pixels when there are too few kernels to fill the device).
// Each thread takes the pixels p_begin + tid + 256 i, carrying (b, oh, ow)
// from step to step (no division per pixel), loads dY once per pixel and one
// input element per value (the kernel's taps staged in shared memory, up to
// kVals values per sweep, accumulators in registers: 4, 8 or 16 by the
// pattern's size). Then a fixed-order block reduction: a __shfl_down_sync
// tree per warp, the 8 warp sums added in warp order. With one split the CTA
// stores dW; with several, each split stores its partial sums (accumulation
// type) in a workspace and a second kernel adds them in split order. Every
// element has one writer and a fixed order of additions: deterministic, no
// atomics. The split count depends only on the shape and the SM count.
#include <type_traits>

#include "cuda/common/launch.cuh"
#include "cuda/common/split_k.cuh"
#include "cuda/pattern/pattern_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace pattern {
namespace {

constexpr int kVals = 16;  // values per sweep over the pixels (stage size)
// Accumulators a thread keeps per sweep: 16 in fp32, 8 in fp64 (no spills).
template <typename Acc>
constexpr int kSweepVals = sizeof(Acc) == 8 ? 8 : kVals;

// Pixels handled by one split need at least this many per thread.
constexpr int64_t kMinPxPerThread = 16;

template <typename Acc>
struct Stage {
  int2 shift[kVals];      // (kh * dil_h, kw * dil_w) of each value
  int64_t toff[kVals];    // its element offset: shift . (is.h, is.w)
  Acc red[kWarps][kVals];
};

// One sweep over the split's pixels for values v0 .. v0 + nv (nv <= V), then
// the block reduction and the store. Called by the whole CTA.
template <int V, typename T, typename Dst>
__device__ __forceinline__ void sweep(const ConvGeometry& geo, const T* __restrict__ xk,
                                      const Strides4& is, const T* __restrict__ gok,
                                      const Strides4& gs, int64_t p_begin, int64_t p_end,
                                      int nv, Stage<AccT<T>>& s, Dst* __restrict__ dst) {
  using Acc = AccT<T>;
  const int tid = threadIdx.x;
  const int lane = tid % 32, warp = tid / 32;
  const int out_h = static_cast<int>(geo.out_h);
  const int out_w = static_cast<int>(geo.out_w);

  Acc acc[V];
#pragma unroll
  for (int i = 0; i < V; ++i) acc[i] = Acc(0);

  int64_t p = p_begin + tid;
  if (p < p_end) {
    PixelWalk px(p, geo.out_h, geo.out_w, kThreads);
    for (; p < p_end; p += kThreads) {
      const Acc dy = Num<T>::load(gok + px.b * gs.n + int64_t{px.y} * gs.h +
                                  int64_t{px.x} * gs.w);
      const int ih0 = px.y * geo.stride_h - geo.pad_h;
      const int iw0 = px.x * geo.stride_w - geo.pad_w;
      const int64_t xoff = px.b * is.n + int64_t{ih0} * is.h + int64_t{iw0} * is.w;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        if (i >= nv) break;  // CTA-uniform
        // Volatile: re-read (a shared broadcast) rather than hoisted into
        // 4 registers per value for the whole loop.
        const volatile Stage<Acc>& vs = s;
        if (inside(ih0 + vs.shift[i].x, iw0 + vs.shift[i].y, geo))
          acc[i] += dy * Num<T>::load(xk + xoff + vs.toff[i]);
      }
      px.step(out_h, out_w);
    }
  }

#pragma unroll
  for (int i = 0; i < V; ++i) {
    if (i >= nv) break;
    Acc v = acc[i];
#pragma unroll
    for (int d = 16; d > 0; d /= 2) v += __shfl_down_sync(kFullMask, v, d);
    if (lane == 0) s.red[warp][i] = v;
  }
  __syncthreads();
  if (tid < nv) {
    Acc v = s.red[0][tid];
#pragma unroll
    for (int wp = 1; wp < kWarps; ++wp) v += s.red[wp][tid];
    if constexpr (std::is_same_v<Dst, T>) {
      dst[tid] = Num<T>::store(v);
    } else {
      dst[tid] = v;
    }
  }
}

template <typename T, typename Dst>
__global__ void __launch_bounds__(kThreads, kMinCtas)
    grad_weight_kernel(ConvGeometry geo, Patterns pat, const T* __restrict__ input,
                       Strides4 is, const T* __restrict__ grad_out, Strides4 gs,
                       Dst* __restrict__ dst, int64_t dst_split_stride, int64_t split_px,
                       int64_t work) {
  __shared__ Stage<AccT<T>> s;
  const int tid = threadIdx.x;
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  const int64_t cin_g = geo.cin_per_group();
  const int64_t cout_g = geo.cout_per_group();

  // Kernels vary fastest: CTAs resident together sweep one pixel range.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int32_t k = static_cast<int32_t>(w % pat.nnz);
    const int64_t split = w / pat.nnz;
    // The kernel's output channel: the last o with row_ptr[o] <= k.
    int32_t lo = 0, hi = static_cast<int32_t>(geo.cout) - 1;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (__ldg(pat.row_ptr + mid + 1) <= k) lo = mid + 1; else hi = mid;
    }
    const int64_t o = lo;
    const int64_t c = (o / cout_g) * cin_g + __ldg(pat.chan_idx + k);
    const T* xk = input + c * is.c;
    const T* gok = grad_out + o * gs.c;
    const int64_t p_begin = split * split_px;
    const int64_t p_end = p_begin + split_px < pixels ? p_begin + split_px : pixels;
    const int32_t ve = __ldg(pat.value_ptr + k + 1);

    constexpr int kSweep = kSweepVals<AccT<T>>;
    for (int32_t v0 = __ldg(pat.value_ptr + k); v0 < ve; v0 += kSweep) {
      const int nv = ve - v0 < kSweep ? ve - v0 : kSweep;
      if (tid < nv) {
        const int2 d = tap_shift(geo, __ldg(pat.value_tap + v0 + tid));
        s.shift[tid] = d;
        s.toff[tid] = int64_t{d.x} * is.h + int64_t{d.y} * is.w;
      }
      __syncthreads();
      Dst* out = dst + split * dst_split_stride + v0;
      if (nv <= 4)
        sweep<4, T>(geo, xk, is, gok, gs, p_begin, p_end, nv, s, out);
      else if (nv <= 8)
        sweep<8, T>(geo, xk, is, gok, gs, p_begin, p_end, nv, s, out);
      else
        sweep<kSweep, T>(geo, xk, is, gok, gs, p_begin, p_end, nv, s, out);
      __syncthreads();  // the next sweep overwrites the stage
    }
  }
}

}  // namespace

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Patterns& pat, const T* input,
                        Strides4 in_strides, const T* grad_out, Strides4 go_strides,
                        T* grad_values, cudaStream_t stream) {
  using Acc = AccT<T>;
  const int64_t total = pat.nnz_values;
  if (total == 0 || pat.nnz == 0) return cudaSuccess;
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  if (pixels == 0)  // no pixel contributes: the gradient is 0 (all-zero bits)
    return cudaMemsetAsync(grad_values, 0, total * sizeof(T), stream);

  // Each split at least kMinPxPerThread pixels per thread.
  int64_t splits = split_count(pat.nnz, ceil_div(pixels, kMinPxPerThread * kThreads));
  Acc* partial = alloc_split_partials<Acc>(splits, total, stream);
  const int64_t split_px = ceil_div(pixels, splits);
  const int64_t work = splits * pat.nnz;
  if (splits == 1) {
    grad_weight_kernel<T, T><<<grid_for(work), kThreads, 0, stream>>>(
        geo, pat, input, in_strides, grad_out, go_strides, grad_values, 0, split_px, work);
    return cudaGetLastError();
  }
  grad_weight_kernel<T, Acc><<<grid_for(work), kThreads, 0, stream>>>(
      geo, pat, input, in_strides, grad_out, go_strides, partial, total, split_px, work);
  return reduce_splits<T>(partial, splits, total, grad_values, stream);
}

#define SK_INSTANTIATE(T)                                                             \
  template cudaError_t grad_weight<T>(const ConvGeometry&, const Patterns&, const T*, \
                                      Strides4, const T*, Strides4, T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace pattern
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
