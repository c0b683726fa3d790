// Tensor-core stripe forward for fp16/bf16 (sm_80+, mma.sync m16n8k16, fp32
// accumulate). Same decomposition as stripe_forward.cu: a CTA owns kOC
// output channels of one group x kTileN output pixels with fp32 sums in
// shared memory; per tap, the run of stripes of column (g, tap) inside the
// channel range is a GEMM
//   D[rows, pixels] = W[rows, Cin/g] x X_tap[Cin/g, pixels]
// with A = the gathered stripe rows ("row" layout: channels contiguous) and
// B = the input shifted by the tap ("col" layout: per pixel, channels
// contiguous), both staged in shared memory as 32-bit words holding two
// consecutive channels, kBK = 32 channels per step. 8 warps tile the 64 x 64
// chunk as 4 (rows) x 2 (pixels), each warp 16 rows x 32 pixels = 4 MMAs
// per k16; warps whose 16 rows are all past the run skip the MMAs, so a
// short run costs little tensor work. The finished fragments are added into
// the shared sums at their output channels (rows of a run are distinct:
// one writer per sum between barriers, fixed order: deterministic).
#include <atomic>
#include <type_traits>

#include "cuda/common/launch.cuh"
#include "cuda/stripe/stripe_kernels.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace stripe {
namespace {

constexpr int kOC = 128;  // output channels per CTA (32 KB of fp32 sums)
constexpr int kBK = 32;   // channels staged per step
// Shared rows hold kBK/2 words + 4 of padding: the 8 rows x 4 words of a
// fragment load fall in 32 distinct banks.
constexpr int kLdw = kBK / 2 + 4;

struct MmaStage {
  uint32_t a[kTileM][kLdw];  // stripe rows, channel pairs packed
  uint32_t b[kTileN][kLdw];  // pixels, channel pairs packed
};

// D += A * B for one m16n8k16 tile (fragments as in the PTX ISA).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>);
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_mma_kernel(ConvGeometry geo, Stripes st, const T* __restrict__ values,
                       const T* __restrict__ input, Strides4 is,
                       const T* __restrict__ bias, T* __restrict__ output,
                       int64_t ranges, int64_t ptiles, int64_t work) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched: forward_mma_available() rejects such builds
#else
  constexpr int kAWords = kTileM * (kBK / 2) / kThreads;  // per thread: 4
  constexpr int kBPairs = kThreads / kTileN;               // k-pair rows per pass
  __shared__ MmaStage s;
  __shared__ float sums[kOC][kTileN];

  const uint16_t* vals = reinterpret_cast<const uint16_t*>(values);
  const uint16_t* in = reinterpret_cast<const uint16_t*>(input);
  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int wm = warp % 4, wn = warp / 4;  // warp tile: rows 16*wm, pixels 32*wn
  const int gq = (tid % 32) / 4;           // PTX "groupID"
  const int tq = tid % 4;                  // PTX "threadID_in_group"
  const int lp = tid % kTileN;  // the pixel this thread stages and stores
  const int lk = tid / kTileN;  // its first staged channel pair (and row)
  const int taps = geo.taps();
  const int64_t cin_g = geo.cin_per_group();
  const int64_t cout_g = geo.cout_per_group();
  const int64_t plane = geo.out_h * geo.out_w;

  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int64_t range = w % ranges;
    const int64_t m0 = ((w / ranges) % ptiles) * kTileN;
    const int64_t g = w / ranges / ptiles;
    const int64_t obase = g * cout_g + range * kOC;
    const int nout = static_cast<int>(
        cout_g - range * kOC < kOC ? cout_g - range * kOC : kOC);

    for (int i = tid; i < kOC * kTileN; i += kThreads) (&sums[0][0])[i] = 0.f;

    const PixelOrigin px = pixel_origin(geo, is, m0 + lp);
    const uint16_t* xg = in + g * cin_g * is.c;

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
      const int64_t xoff = px.offset + int64_t{dy} * is.h + int64_t{dx} * is.w;

      for (int32_t e0 = e_first; e0 < e_end; e0 += kTileM) {
        const int nrows = e_end - e0 < kTileM ? e_end - e0 : kTileM;
        // A words of this thread: row (tid + q*kThreads) / 16, pair tid % 16.
        const uint16_t* wrow[kAWords];
#pragma unroll
        for (int q = 0; q < kAWords; ++q) {
          const int r = (tid + q * kThreads) / (kBK / 2);
          wrow[q] = r < nrows
                        ? vals + int64_t{__ldg(st.stripe_idx + e0 + r)} * cin_g
                        : nullptr;
        }
        const bool active = 16 * wm < nrows;  // warp-uniform
        float acc[4][4] = {};

        for (int64_t k0 = 0; k0 < cin_g; k0 += kBK) {
#pragma unroll
          for (int q = 0; q < kAWords; ++q) {
            const int i = tid + q * kThreads;
            const int kp = i % (kBK / 2);
            const int64_t k = k0 + 2 * kp;
            uint32_t word = 0;
            if (wrow[q] != nullptr) {
              const uint32_t lo = k < cin_g ? wrow[q][k] : 0u;
              const uint32_t hi = k + 1 < cin_g ? wrow[q][k + 1] : 0u;
              word = lo | (hi << 16);
            }
            s.a[i / (kBK / 2)][kp] = word;
          }
#pragma unroll
          for (int kp = lk; kp < kBK / 2; kp += kBPairs) {
            const int64_t k = k0 + 2 * kp;
            uint32_t word = 0;
            if (in_img) {
              const uint16_t* x = xg + xoff + k * is.c;
              const uint32_t lo = k < cin_g ? x[0] : 0u;
              const uint32_t hi = k + 1 < cin_g ? x[is.c] : 0u;
              word = lo | (hi << 16);
            }
            s.b[lp][kp] = word;
          }
          __syncthreads();
          if (active) {
#pragma unroll
            for (int ks = 0; ks < kBK / 16; ++ks) {
              const int c = ks * 8 + tq;  // word holding k = 16*ks + 2tq, +1
              const int r = 16 * wm + gq;
              const uint32_t a[4] = {s.a[r][c], s.a[r + 8][c], s.a[r][c + 4],
                                     s.a[r + 8][c + 4]};
#pragma unroll
              for (int nt = 0; nt < 4; ++nt) {
                const int n = 32 * wn + 8 * nt + gq;
                const uint32_t b[2] = {s.b[n][c], s.b[n][c + 4]};
                mma_16816<T>(acc[nt], a, b);
              }
            }
          }
          __syncthreads();  // the next step overwrites the stage
        }
        // Fragment element (nt, i): row 16*wm + gq + 8*(i/2), pixel
        // 32*wn + 8*nt + 2*tq + i%2.
        if (active) {
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int r = 16 * wm + gq + 8 * h;
            if (r >= nrows) continue;
            const int o = static_cast<int>(__ldg(st.stripe_row + e0 + r) - obase);
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
              const int p = 32 * wn + 8 * nt + 2 * tq;
              sums[o][p] += acc[nt][2 * h];
              sums[o][p + 1] += acc[nt][2 * h + 1];
            }
          }
        }
      }
    }
    __syncthreads();

    const int64_t m = m0 + lp;
    if (m < geo.batch * plane) {
      const int64_t b = m / plane;
      T* out = output + (b * geo.cout + obase) * plane + (m - b * plane);
      for (int o = lk; o < nout; o += kBPairs) {
        float v = sums[o][lp];
        if (bias != nullptr) v += Num<T>::load(bias + obase + o);
        out[o * plane] = Num<T>::store(v);
      }
    }
    __syncthreads();  // the next tile clears the sums
  }
#endif
}

// Per-device answer of forward_mma_available(): 0 unknown, 1 no, 2 yes.
constexpr int kMaxDevices = 64;
std::atomic<int> g_mma_state[kMaxDevices];

}  // namespace

bool forward_mma_available() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxDevices) {
    cudaGetLastError();  // clear it: this was only a query
    return false;
  }
  int state = g_mma_state[dev].load(std::memory_order_relaxed);
  if (state == 0) {
    // binaryVersion is the SASS the driver picked for this device, so this
    // also catches a build whose kernel body is the pre-sm_80 stub.
    cudaFuncAttributes attr;
    const bool ok = cudaFuncGetAttributes(&attr, forward_mma_kernel<__half>) ==
                        cudaSuccess &&
                    attr.binaryVersion >= 80;
    if (!ok) cudaGetLastError();
    state = ok ? 2 : 1;
    g_mma_state[dev].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

template <typename T>
cudaError_t forward_mma(const ConvGeometry& geo, const Stripes& stripes,
                        const T* values, const T* input, Strides4 in_strides,
                        const T* bias, T* output, cudaStream_t stream) {
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  const int64_t ranges = ceil_div(geo.cout_per_group(), kOC);
  const int64_t ptiles = ceil_div(pixels, kTileN);
  const int64_t work = geo.groups * ranges * ptiles;
  if (work == 0) return cudaSuccess;
  forward_mma_kernel<T><<<grid_for(work), kThreads, 0, stream>>>(
      geo, stripes, values, input, in_strides, bias, output, ranges, ptiles,
      work);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                   \
  template cudaError_t forward_mma<T>(const ConvGeometry&, const Stripes&,  \
                                      const T*, const T*, Strides4,         \
                                      const T*, T*, cudaStream_t);
SK_INSTANTIATE(__half)
SK_INSTANTIATE(__nv_bfloat16)
#undef SK_INSTANTIATE

}  // namespace stripe
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
