// Stripe forward on CUDA cores (every dtype):
//   out[b, o, px] = bias[o] + sum over kept stripes s = (o, tap) of
//                   sum_c values[s, c] * x[b, g*Cin/g + c, px shifted by tap].
// A CTA owns kOutPerCta output channels [o0, o0 + kOutPerCta) of one group x kTileN output
// pixels (flattened over batch x out_h x out_w) and keeps their sums in
// shared memory. For each tap it takes the stripes of column (g, tap) whose
// output channel lies in its range (a contiguous run: stripe_row ascends),
// kTileM at a time, and runs the GEMM W[rows, Cin/g] x X_tap[Cin/g, pixels]
// in registers, K = Cin/g staged kBK channels per step; the finished
// [rows x pixels] tile is then added into the shared sums at those output
// channels. Rows of one run are distinct, so no two threads add to one sum
// between barriers, and the order of additions (taps ascending, K ascending)
// is fixed: deterministic, no atomics. The work is the kept stripes' MACs
// (rounded up to the tile), not the dense conv's. The epilogue adds the bias
// and writes every (channel, pixel) of the tile, coalesced along pixels;
// channels with no stripe get bias or 0.
#include "cuda/common/launch.cuh"
#include "cuda/stripe/stripe_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace stripe {
namespace {

// Output channels per CTA: the shared sums are kOutPerCta x kTileN accumulators
// (32 KB for fp32 and fp64 alike).
template <typename Acc>
constexpr int kOutPerCta = sizeof(Acc) == 8 ? 64 : 128;

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(ConvGeometry geo, Stripes st, const T* __restrict__ values,
                   const T* __restrict__ input, Strides4 is,
                   const T* __restrict__ bias, T* __restrict__ output,
                   int64_t ranges, int64_t ptiles, int64_t work) {
  using Acc = AccT<T>;
  constexpr int BK = kDepth<Acc>;
  constexpr int OC = kOutPerCta<Acc>;
  constexpr int kAIters = BK * kTileM / kThreads;  // A elements per thread
  constexpr int kBRows = kThreads / kTileN;        // k rows staged per pass
  __shared__ Operands<Acc, BK> s;
  __shared__ Acc sums[OC][kTileN];

  const int tid = threadIdx.x;
  const int tx = tid % 16, ty = tid / 16;
  const int lp = tid % kTileN;  // the pixel this thread stages and stores
  const int lk = tid / kTileN;  // its first staged k row
  const int taps = geo.taps();
  const int64_t cin_g = geo.cin_per_group();
  const int64_t cout_g = geo.cout_per_group();
  const int64_t plane = geo.out_h * geo.out_w;

  // Channel ranges vary fastest: CTAs resident together read one input tile.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t range = w % ranges;
    const int64_t m0 = ((w / ranges) % ptiles) * kTileN;
    const int64_t g = w / ranges / ptiles;
    const int64_t obase = g * cout_g + range * OC;  // first output channel
    const int nout = static_cast<int>(
        cout_g - range * OC < OC ? cout_g - range * OC : OC);

    for (int i = tid; i < OC * kTileN; i += kThreads) (&sums[0][0])[i] = Acc(0);

    const PixelOrigin px = pixel_origin(geo, is, m0 + lp);
    const T* xg = input + g * cin_g * is.c;

    for (int tap = 0; tap < taps; ++tap) {
      const int64_t col = g * taps + tap;
      const int32_t e_first = lower_bound(st.stripe_row, __ldg(st.tap_ptr + col),
                                          __ldg(st.tap_ptr + col + 1), obase);
      const int32_t e_end = lower_bound(st.stripe_row, e_first,
                                        __ldg(st.tap_ptr + col + 1), obase + nout);
      if (e_first == e_end) continue;  // CTA-uniform

      const int dy = (tap / geo.kw) * geo.dil_h;
      const int dx = (tap % geo.kw) * geo.dil_w;
      const bool in_img = px.ok && inside(px.ih0 + dy, px.iw0 + dx, geo);
      // Only formed (and read) when in_img: the offset may point outside.
      const int64_t xoff = px.offset + int64_t{dy} * is.h + int64_t{dx} * is.w;

      for (int32_t e0 = e_first; e0 < e_end; e0 += kTileM) {
        const int nrows = e_end - e0 < kTileM ? e_end - e0 : kTileM;
        // This thread's A rows for the whole K loop (null past the run).
        const T* wrow[kAIters];
#pragma unroll
        for (int q = 0; q < kAIters; ++q) {
          const int r = (tid + q * kThreads) / BK;
          wrow[q] = r < nrows
                        ? values + int64_t{__ldg(st.stripe_idx + e0 + r)} * cin_g
                        : nullptr;
        }
        Acc acc[4][4];
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] = Acc(0);

        for (int64_t k0 = 0; k0 < cin_g; k0 += BK) {
#pragma unroll
          for (int q = 0; q < kAIters; ++q) {
            const int i = tid + q * kThreads;
            const int k = i % BK;
            const int r = i / BK;
            s.a[k][r] = wrow[q] != nullptr && k0 + k < cin_g
                            ? Num<T>::load(wrow[q] + k0 + k)
                            : Acc(0);
          }
#pragma unroll
          for (int k = lk; k < BK; k += kBRows)
            s.b[k][lp] = in_img && k0 + k < cin_g
                             ? Num<T>::load(xg + xoff + (k0 + k) * is.c)
                             : Acc(0);
          __syncthreads();
          if (4 * ty < nrows) micro_tile(s, tx, ty, acc);
          __syncthreads();  // the next step overwrites the operands
        }
        // Rows of the run are distinct output channels; the K loop above
        // ran at least once, so its barriers order this against the
        // previous run's additions.
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const int r = 4 * ty + i;
          if (r >= nrows) continue;
          const int o = static_cast<int>(__ldg(st.stripe_row + e0 + r) - obase);
#pragma unroll
          for (int j = 0; j < 4; ++j) sums[o][tx + 16 * j] += acc[i][j];
        }
      }
    }
    __syncthreads();

    // Epilogue: thread (lp, rows lk, lk + kBRows, ...) writes its pixel.
    const int64_t m = m0 + lp;
    if (m < geo.batch * plane) {
      const int64_t b = m / plane;
      T* out = output + (b * geo.cout + obase) * plane + (m - b * plane);
      for (int o = lk; o < nout; o += kBRows) {
        Acc v = sums[o][lp];
        if (bias != nullptr) v += Num<T>::load(bias + obase + o);
        out[o * plane] = Num<T>::store(v);
      }
    }
    __syncthreads();  // the next tile clears the sums
  }
}

}  // namespace

template <typename T>
cudaError_t forward(const ConvGeometry& geo, const Stripes& stripes,
                    const T* values, const T* input, Strides4 in_strides,
                    const T* bias, T* output, cudaStream_t stream) {
  constexpr int OC = kOutPerCta<AccT<T>>;
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  const int64_t ranges = ceil_div(geo.cout_per_group(), OC);
  const int64_t ptiles = ceil_div(pixels, kTileN);
  const int64_t work = geo.groups * ranges * ptiles;
  if (work == 0) return cudaSuccess;
  forward_kernel<T><<<grid_for(work), kThreads, 0, stream>>>(
      geo, stripes, values, input, in_strides, bias, output, ranges, ptiles,
      work);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                    \
  template cudaError_t forward<T>(const ConvGeometry&, const Stripes&,       \
                                  const T*, const T*, Strides4, const T*, T*, \
                                  cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace stripe
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
