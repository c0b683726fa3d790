// Stripe grad-input on CUDA cores (every dtype), a gather (no atomics):
//   dX[b, g*Cin/g + c, ih, iw] = sum over taps t and the stripes s of column
//     (g, t), output channel o_s, of values[s, c] * dY[b, o_s, oh, ow]
// where (oh, ow) is the output pixel that reads (ih, iw) through tap t (none
// when the stride does not divide, or it falls outside the output).
// A CTA owns kTileM input channels of one group x kTileN input pixels
// (flattened over batch x in_h x in_w); the GEMM's K runs over every tap's
// stripe list, kBK stripes per step, into one register tile:
//   A[k][c] = values[stripe_idx[e], c]   (rows of the stripe, coalesced)
//   B[k][p] = dY[b, stripe_row[e], oh_t(p), ow_t(p)]   (0 where no pixel)
// Taps that reach no pixel of the tile are skipped (stride > 1 skips most).
// Each element has one writer; the order of additions is fixed.
#include "cuda/common/launch.cuh"
#include "cuda/stripe/stripe_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace stripe {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(ConvGeometry geo, Stripes st, const T* __restrict__ values,
                      const T* __restrict__ grad_out, Strides4 gs,
                      T* __restrict__ grad_in, int64_t ctiles, int64_t ptiles,
                      int64_t work) {
  using Acc = AccT<T>;
  constexpr int BK = kDepth<Acc>;
  constexpr int kARows = kThreads / kTileM;  // k rows staged per pass
  __shared__ Operands<Acc, BK> s;

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int lane_c = tid % kTileM;  // the channel this thread stages
  const int lp = tid % kTileN;      // the pixel this thread stages
  const int lk = tid / kTileN;      // its first staged k row
  const int taps = geo.taps();
  const int64_t cin_g = geo.cin_per_group();
  const int64_t in_plane = geo.in_h * geo.in_w;
  const int64_t in_pixels = geo.batch * in_plane;
  const int out_h = static_cast<int>(geo.out_h);
  const int out_w = static_cast<int>(geo.out_w);

  // Channel tiles vary fastest: CTAs resident together read one dY tile.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t c0 = (w % ctiles) * kTileM;
    const int64_t m0 = ((w / ctiles) % ptiles) * kTileN;
    const int64_t g = w / ctiles / ptiles;
    const int nc = static_cast<int>(cin_g - c0 < kTileM ? cin_g - c0 : kTileM);

    // The staged pixel: batch, row, column (m past the end: no taps).
    const int64_t m = m0 + lp;
    const bool px_ok = m < in_pixels;
    const int64_t b = px_ok ? m / in_plane : 0;
    const int rem = static_cast<int>(m - b * in_plane);
    const int ih = px_ok ? rem / static_cast<int>(geo.in_w) : 0;
    const int iw = px_ok ? rem - ih * static_cast<int>(geo.in_w) : 0;
    const T* go_b = grad_out + b * gs.n;
    const T* vals = values + c0;

    Acc acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);

    for (int tap = 0; tap < taps; ++tap) {
      const int kh = tap / geo.kw, kw = tap % geo.kw;
      const int th = ih + geo.pad_h - kh * geo.dil_h;  // = oh * stride_h
      const int tw = iw + geo.pad_w - kw * geo.dil_w;
      const int oh = th / geo.stride_h, ow = tw / geo.stride_w;
      const bool hit = px_ok && th >= 0 && tw >= 0 && th % geo.stride_h == 0 &&
                       tw % geo.stride_w == 0 && oh < out_h && ow < out_w;
      if (!__syncthreads_or(hit)) continue;  // no pixel of the tile: skip
      const int64_t goff = int64_t{oh} * gs.h + int64_t{ow} * gs.w;

      const int64_t col = g * taps + tap;
      const int32_t e_end = __ldg(st.tap_ptr + col + 1);
      for (int32_t e0 = __ldg(st.tap_ptr + col); e0 < e_end; e0 += BK) {
        const int ne = e_end - e0 < BK ? e_end - e0 : BK;
#pragma unroll
        for (int k = lk; k < BK; k += kARows) {
          const bool ok = k < ne;
          s.a[k][lane_c] =
              ok && lane_c < nc
                  ? Num<T>::load(vals + int64_t{__ldg(st.stripe_idx + e0 + k)} * cin_g +
                                 lane_c)
                  : Acc(0);
          s.b[k][lp] =
              ok && hit
                  ? Num<T>::load(go_b + goff +
                                 int64_t{__ldg(st.stripe_row + e0 + k)} * gs.c)
                  : Acc(0);
        }
        __syncthreads();
        if (4 * ty < nc) micro_tile(s, tx, ty, acc);
        __syncthreads();  // the next step overwrites the operands
      }
    }

    // Rows 4*ty + i are channels, columns tx + 16*j pixels: NCHW stores
    // coalesce along the pixels.
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int64_t mj = m0 + tx + 16 * j;
      if (mj >= in_pixels) continue;
      const int64_t bj = mj / in_plane;
      T* dst = grad_in + (bj * geo.cin + g * cin_g + c0) * in_plane +
               (mj - bj * in_plane);
#pragma unroll
      for (int i = 0; i < 4; ++i)
        if (4 * ty + i < nc) dst[(4 * ty + i) * in_plane] = Num<T>::store(acc[i][j]);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Stripes& stripes,
                       const T* values, const T* grad_out, Strides4 go_strides,
                       T* grad_in, cudaStream_t stream) {
  const int64_t ctiles = ceil_div(geo.cin_per_group(), kTileM);
  const int64_t ptiles = ceil_div(geo.batch * geo.in_h * geo.in_w, kTileN);
  const int64_t work = geo.groups * ctiles * ptiles;
  if (work == 0) return cudaSuccess;
  grad_input_kernel<T><<<grid_for(work), kThreads, 0, stream>>>(
      geo, stripes, values, grad_out, go_strides, grad_in, ctiles, ptiles,
      work);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                  \
  template cudaError_t grad_input<T>(const ConvGeometry&, const Stripes&,  \
                                     const T*, const T*, Strides4, T*,     \
                                     cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace stripe
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
