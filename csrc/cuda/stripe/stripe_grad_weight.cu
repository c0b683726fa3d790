// Stripe grad-weight on CUDA cores (every dtype), kept stripes only:
//   dW[s, c] = sum over (b, oh, ow) of dY[b, o_s, oh, ow] *
//              x[b, g*Cin/g + c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
// with (o_s, tap = (kh, kw)) the stripe's output channel and position. Per
// column (g, tap) this is the GEMM dW[O_k, Cin/g] = dY[O_k, P] x X_k[P, Cin/g]
// over the P = batch x out_h x out_w pixels. A CTA owns kTileM stripes of
// one column (consecutive in the transposed view) x kTileN input channels
// and one of `splits` pixel ranges (split-K), K staged kBK pixels per step:
//   A[k][r] = dY[b, stripe_row[e0 + r], oh, ow]
//   B[k][c] = x[b, g*Cin/g + c0 + c, ih, iw]   (0 outside the image)
// With one split the CTA stores its tile; with several, each split stores
// its partial sums (accumulation type) in a workspace and a second kernel
// adds the splits in split order. Either way every element has one writer
// and a fixed order of additions: deterministic, no atomics. The split
// count depends only on the shape and the device's SM count.
#include <type_traits>

#include "cuda/common/launch.cuh"
#include "cuda/common/split_k.cuh"
#include "cuda/stripe/stripe_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace stripe {
namespace {

template <typename T, typename Dst>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(ConvGeometry geo, Stripes st, const T* __restrict__ input,
                       Strides4 is, const T* __restrict__ grad_out, Strides4 gs,
                       Dst* __restrict__ dst, int64_t dst_split_stride,
                       int64_t ctiles, int64_t rtiles, int64_t columns,
                       int64_t split_px, int64_t work) {
  using Acc = AccT<T>;
  constexpr int BK = kDepth<Acc>;
  constexpr int kIters = BK * kTileM / kThreads;  // rows staged per thread
  constexpr int kRowStep = kThreads / BK;
  __shared__ Operands<Acc, BK> s;

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int lk = tid % BK;  // the pixel (k) this thread stages
  const int lr = tid / BK;  // its first staged row / channel
  const int taps = geo.taps();
  const int64_t cin_g = geo.cin_per_group();
  const int64_t plane = geo.out_h * geo.out_w;
  const int64_t pixels = geo.batch * plane;
  const int out_w = static_cast<int>(geo.out_w);
  const int out_h = static_cast<int>(geo.out_h);

  // Channel tiles vary fastest, then row tiles, columns, splits.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    int64_t rest = w;
    const int64_t c0 = (rest % ctiles) * kTileN;
    rest /= ctiles;
    const int64_t rt = rest % rtiles;
    rest /= rtiles;
    const int64_t col = rest % columns;
    const int64_t split = rest / columns;

    const int32_t e_end = __ldg(st.tap_ptr + col + 1);
    const int64_t e0 = __ldg(st.tap_ptr + col) + rt * kTileM;
    if (e0 >= e_end) continue;  // the column has fewer stripes: CTA-uniform
    const int nrows = static_cast<int>(e_end - e0 < kTileM ? e_end - e0 : kTileM);
    const int nc = static_cast<int>(cin_g - c0 < kTileN ? cin_g - c0 : kTileN);
    const int64_t g = col / taps;
    const int tap = static_cast<int>(col % taps);
    const int dy = (tap / geo.kw) * geo.dil_h - geo.pad_h;
    const int dx = (tap % geo.kw) * geo.dil_w - geo.pad_w;

    // Offsets of this thread's staged rows (-1: past the run / channels).
    int64_t row_off[kIters], ch_off[kIters];
#pragma unroll
    for (int q = 0; q < kIters; ++q) {
      const int r = lr + q * kRowStep;
      row_off[q] = r < nrows ? int64_t{__ldg(st.stripe_row + e0 + r)} * gs.c : -1;
      ch_off[q] = r < nc ? (g * cin_g + c0 + r) * is.c : -1;
    }

    Acc acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);

    const int64_t p_begin = split * split_px;
    const int64_t p_end = p_begin + split_px < pixels ? p_begin + split_px : pixels;
    if (p_begin < p_end) {
      // The staged pixel p = k0 + lk, carried as (b, oh, ow) across steps.
      int64_t p = p_begin + lk;
      int64_t b = p / plane;
      int oh = static_cast<int>((p - b * plane) / out_w);
      int ow = static_cast<int>(p - b * plane - int64_t{oh} * out_w);
      for (int64_t k0 = p_begin; k0 < p_end; k0 += BK) {
        const bool p_ok = p < p_end;
        const int ih = oh * geo.stride_h + dy;
        const int iw = ow * geo.stride_w + dx;
        const bool x_ok = p_ok && inside(ih, iw, geo);
        const T* go = grad_out + b * gs.n + int64_t{oh} * gs.h + int64_t{ow} * gs.w;
        const T* x = input + b * is.n + int64_t{ih} * is.h + int64_t{iw} * is.w;
#pragma unroll
        for (int q = 0; q < kIters; ++q) {
          const int r = lr + q * kRowStep;
          s.a[lk][r] = p_ok && row_off[q] >= 0 ? Num<T>::load(go + row_off[q]) : Acc(0);
          s.b[lk][r] = x_ok && ch_off[q] >= 0 ? Num<T>::load(x + ch_off[q]) : Acc(0);
        }
        __syncthreads();
        if (4 * ty < nrows) micro_tile(s, tx, ty, acc);
        __syncthreads();  // the next step overwrites the operands
        // Advance the staged pixel by BK (out_w may be smaller than BK).
        p += BK;
        ow += BK;
        while (ow >= out_w) {
          ow -= out_w;
          if (++oh == out_h) {
            oh = 0;
            ++b;
          }
        }
      }
    }

    // Rows 4*ty + i are stripes, columns tx + 16*j channels (contiguous).
    Dst* out = dst + split * dst_split_stride + c0;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = 4 * ty + i;
      if (r >= nrows) continue;
      Dst* row = out + int64_t{__ldg(st.stripe_idx + e0 + r)} * cin_g;
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int c = tx + 16 * j;
        if (c >= nc) continue;
        if constexpr (std::is_same_v<Dst, T>) {
          row[c] = Num<T>::store(acc[i][j]);
        } else {
          row[c] = acc[i][j];
        }
      }
    }
  }
}

}  // namespace

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Stripes& stripes,
                        const T* input, Strides4 in_strides, const T* grad_out,
                        Strides4 go_strides, T* grad_values,
                        cudaStream_t stream) {
  using Acc = AccT<T>;
  constexpr int BK = kDepth<Acc>;
  const int64_t cin_g = geo.cin_per_group();
  const int64_t total = stripes.nnz * cin_g;
  if (total == 0) return cudaSuccess;
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  if (pixels == 0)  // no pixel contributes: the gradient is 0 (all-zero bits)
    return cudaMemsetAsync(grad_values, 0, total * sizeof(T), stream);

  const int64_t columns = int64_t{geo.groups} * geo.taps();
  const int64_t ctiles = ceil_div(cin_g, kTileN);
  const int64_t rtiles = ceil_div(geo.cout_per_group(), kTileM);  // bound
  // Tiles that hold stripes, if the stripes spread evenly over the columns.
  const int64_t busy = columns * ceil_div(ceil_div(stripes.nnz, columns), kTileM) * ctiles;
  // Each split at least 32 steps.
  int64_t splits = split_count(busy, ceil_div(pixels, 32 * BK));
  Acc* partial = alloc_split_partials<Acc>(splits, total, stream);
  const int64_t split_px = ceil_div(ceil_div(pixels, splits), BK) * BK;
  const int64_t work = splits * columns * rtiles * ctiles;
  if (splits == 1) {
    grad_weight_kernel<T, T><<<grid_for(work), kThreads, 0, stream>>>(
        geo, stripes, input, in_strides, grad_out, go_strides, grad_values, 0,
        ctiles, rtiles, columns, split_px, work);
    return cudaGetLastError();
  }
  grad_weight_kernel<T, Acc><<<grid_for(work), kThreads, 0, stream>>>(
      geo, stripes, input, in_strides, grad_out, go_strides, partial, total,
      ctiles, rtiles, columns, split_px, work);
  return reduce_splits<T>(partial, splits, total, grad_values, stream);
}

#define SK_INSTANTIATE(T)                                                  \
  template cudaError_t grad_weight<T>(const ConvGeometry&, const Stripes&, \
                                      const T*, Strides4, const T*,        \
                                      Strides4, T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace stripe
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
