// Tensor-core forward for fp16/bf16 with N % 8 == 0 (sm_80+, mma.sync
// m16n8k16, fp32 accumulate). Per block row this is an implicit GEMM
//   out[pixels, lanes] = A[pixels, K] * B[K, lanes],  K = kept blocks * taps,
// where A is the input gathered at (kept channel, tap) pairs (im2col on the
// fly) and B is the row's slice of `values`: the row's blocks are contiguous,
// so B is a dense [K, N] matrix. A CTA owns kBM pixels x BN lanes of one row;
// each step stages kBK columns of A and B in shared memory and runs two k16
// MMAs per warp tile.
#include <atomic>

#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBM = kThreads;  // one gathered pixel per thread; 32 per warp
constexpr int kBK = 32;        // (channel, tap) pairs staged per step
// Shared rows hold k pairs as 32-bit words. 16 + 4 words per row puts the 8
// rows x 4 words of each fragment load in 32 distinct banks.
constexpr int kLdw = kBK / 2 + 4;

template <int BN>
struct Stage {
  uint32_t a[kBM][kLdw];  // gathered input, pixel-major, k pairs packed
  uint32_t b[BN][kLdw];   // values, lane-major (the MMA's "col" B layout)
  int64_t koff[kBK];      // offset of pair k from a pixel's origin
  int dy[kBK], dx[kBK];   // its spatial displacement, for the bounds check
};

// D += A * B for one m16n8k16 tile (fragments as in the PTX ISA).
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4],
                                          const uint32_t (&b)[2]) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>);
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// Threads 0..kBK-1 decode K columns k0 .. k0 + kBK of the row into the
// input offset and displacement of their (channel, tap) pair.
template <int BN>
__device__ __forceinline__ void decode_columns(const ConvGeometry& geo,
                                               const Block1xN& blocks,
                                               const Strides4& is, int64_t row,
                                               int64_t k0, int64_t K,
                                               Stage<BN>& s) {
  const int i = threadIdx.x;
  const int64_t k = k0 + i;
  if (i >= kBK || k >= K) return;
  const int taps = geo.taps();
  const int32_t blk = blocks.row_ptr[row] + static_cast<int32_t>(k / taps);
  const int tap = static_cast<int>(k % taps);
  const int dy = (tap / geo.kw) * geo.dil_h;
  const int dx = (tap % geo.kw) * geo.dil_w;
  const int64_t c = block_in_channel(geo, blocks, row, blocks.col_idx[blk]);
  s.dy[i] = dy;
  s.dx[i] = dx;
  s.koff[i] = c * is.c + dy * is.h + dx * is.w;
}

// Raw 16 bits of input column kk for this thread's pixel (0 outside the
// image, past K, or past the last pixel).
template <int BN>
__device__ __forceinline__ uint32_t gather(const uint16_t* in,
                                           const ConvGeometry& geo,
                                           const PixelOrigin& px, int kk,
                                           int ncols, const Stage<BN>& s) {
  if (!px.ok || kk >= ncols) return 0;
  if (!inside(px.ih0 + s.dy[kk], px.iw0 + s.dx[kk], geo)) return 0;
  return in[px.offset + s.koff[kk]];
}

// Stage A (thread t gathers pixel t's row) and B (lanes n0 .. n0 + BN of
// the row's [K, N] values, starting at `vals` = its column k0 = 0).
template <int BN>
__device__ __forceinline__ void fill_stage(const uint16_t* in,
                                           const uint16_t* vals, int32_t n,
                                           const ConvGeometry& geo,
                                           const PixelOrigin& px, int64_t k0,
                                           int ncols, Stage<BN>& s) {
#pragma unroll 4
  for (int kp = 0; kp < kBK / 2; ++kp) {
    const uint32_t lo = gather(in, geo, px, 2 * kp, ncols, s);
    const uint32_t hi = gather(in, geo, px, 2 * kp + 1, ncols, s);
    s.a[threadIdx.x][kp] = lo | (hi << 16);
  }
  for (int i = threadIdx.x; i < BN * (kBK / 2); i += kThreads) {
    const int lane = i % BN;
    const int kp = i / BN;
    const uint16_t* v = vals + (k0 + 2 * kp) * n + lane;
    const uint32_t lo = 2 * kp < ncols ? v[0] : 0u;
    const uint32_t hi = 2 * kp + 1 < ncols ? v[n] : 0u;
    s.b[lane][kp] = lo | (hi << 16);
  }
}

// This warp's 32 pixels x BN lanes += the staged kBK columns.
template <typename T, int BN>
__device__ __forceinline__ void mma_stage(const Stage<BN>& s,
                                          float (&acc)[2][BN / 8][4]) {
  const int warp = threadIdx.x / 32;
  const int g = (threadIdx.x % 32) / 4;  // PTX "groupID"
  const int t = threadIdx.x % 4;         // PTX "threadID_in_group"
#pragma unroll
  for (int ks = 0; ks < kBK / 16; ++ks) {
    const int c = ks * 8 + t;  // word holding k = 16*ks + 2t, 2t+1
    uint32_t a[2][4];
#pragma unroll
    for (int mt = 0; mt < 2; ++mt) {
      const int r = warp * 32 + mt * 16 + g;
      a[mt][0] = s.a[r][c];
      a[mt][1] = s.a[r + 8][c];
      a[mt][2] = s.a[r][c + 4];
      a[mt][3] = s.a[r + 8][c + 4];
    }
#pragma unroll
    for (int nt = 0; nt < BN / 8; ++nt) {
      const uint32_t b[2] = {s.b[nt * 8 + g][c], s.b[nt * 8 + g][c + 4]};
#pragma unroll
      for (int mt = 0; mt < 2; ++mt) mma_16816<T>(acc[mt][nt], a[mt], b);
    }
  }
}

// Accumulator element (mt, nt, i) is pixel warp*32 + mt*16 + g + 8*(i/2)
// and lane nt*8 + 2t + i%2 of the tile.
template <typename T, int BN>
__device__ __forceinline__ void store_tile(const ConvGeometry& geo,
                                           const Block1xN& blocks,
                                           int64_t row, int64_t m0, int n0,
                                           const float (&acc)[2][BN / 8][4],
                                           const T* bias, T* output) {
  const int64_t plane = geo.out_h * geo.out_w;
  const int64_t pixels = geo.batch * plane;
  const int32_t valid = block_row_valid(geo, blocks, row);
  const int64_t o0 = block_row_first_out(geo, blocks, row);
  const int warp = threadIdx.x / 32;
  const int g = (threadIdx.x % 32) / 4;
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int64_t m = m0 + warp * 32 + mt * 16 + h * 8 + g;
      if (m >= pixels) continue;
      const int64_t b = m / plane;
      T* out = output + (b * geo.cout + o0) * plane + (m - b * plane);
#pragma unroll
      for (int nt = 0; nt < BN / 8; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int lane = n0 + nt * 8 + 2 * t + e;
          if (lane >= valid) continue;  // padding of a short last row
          float v = acc[mt][nt][2 * h + e];
          if (bias != nullptr) v += Num<T>::load(bias + o0 + lane);
          out[lane * plane] = Num<T>::store(v);
        }
      }
    }
  }
}

template <typename T, int BN>
__global__ void __launch_bounds__(kThreads)
    forward_mma_kernel(ConvGeometry geo, Block1xN blocks,
                       const T* __restrict__ values,
                       const T* __restrict__ input, Strides4 is,
                       const T* __restrict__ bias, T* __restrict__ output,
                       int64_t rows, int chunks, int64_t work) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
  __trap();  // never launched: forward_mma_available() rejects such builds
#else
  __shared__ Stage<BN> s;
  const uint16_t* in = reinterpret_cast<const uint16_t*>(input);
  const int taps = geo.taps();
  // Rows vary fastest so CTAs resident together read the same input pixels.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int n0 = static_cast<int>(w % chunks) * BN;
    const int64_t row = (w / chunks) % rows;
    const int64_t m0 = (w / chunks / rows) * kBM;
    const PixelOrigin px = pixel_origin(geo, is, m0 + threadIdx.x);
    const int32_t first = blocks.row_ptr[row];
    const int64_t K = int64_t{blocks.row_ptr[row + 1] - first} * taps;
    const uint16_t* vals = reinterpret_cast<const uint16_t*>(values) +
                           int64_t{first} * taps * blocks.n + n0;

    float acc[2][BN / 8][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kBK) {
      const int ncols = static_cast<int>(K - k0 < kBK ? K - k0 : kBK);
      decode_columns(geo, blocks, is, row, k0, K, s);
      __syncthreads();
      fill_stage(in, vals, blocks.n, geo, px, k0, ncols, s);
      __syncthreads();
      mma_stage<T, BN>(s, acc);
      __syncthreads();  // the next step overwrites the stage
    }
    store_tile<T, BN>(geo, blocks, row, m0, n0, acc, bias, output);
  }
#endif
}

template <typename T, int BN>
cudaError_t launch(const ConvGeometry& geo, const Block1xN& blocks,
                   const T* values, const T* input, Strides4 is, const T* bias,
                   T* output, cudaStream_t stream) {
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  const int64_t rows = geo.groups * blocks.rows_per_group;
  const int chunks = blocks.n / BN;
  const int64_t work = ceil_div(pixels, kBM) * rows * chunks;
  if (work == 0) return cudaSuccess;
  forward_mma_kernel<T, BN><<<grid_for(work), kThreads, 0, stream>>>(
      geo, blocks, values, input, is, bias, output, rows, chunks, work);
  return cudaGetLastError();
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
    const bool ok =
        cudaFuncGetAttributes(&attr, forward_mma_kernel<__half, 8>) ==
            cudaSuccess &&
        attr.binaryVersion >= 80;
    if (!ok) cudaGetLastError();
    state = ok ? 2 : 1;
    g_mma_state[dev].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

template <typename T>
cudaError_t forward_mma(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* values, const T* input, Strides4 in_strides,
                        const T* bias, T* output, cudaStream_t stream) {
  // Widest lane tile dividing N: the gathered A tile is reused BN times.
  const int32_t n = blocks.n;
  if (n % 64 == 0)
    return launch<T, 64>(geo, blocks, values, input, in_strides, bias, output,
                         stream);
  if (n % 32 == 0)
    return launch<T, 32>(geo, blocks, values, input, in_strides, bias, output,
                         stream);
  if (n % 16 == 0)
    return launch<T, 16>(geo, blocks, values, input, in_strides, bias, output,
                         stream);
  return launch<T, 8>(geo, blocks, values, input, in_strides, bias, output,
                      stream);
}

#define SK_INSTANTIATE(T)                                                  \
  template cudaError_t forward_mma<T>(const ConvGeometry&, const Block1xN&, \
                                      const T*, const T*, Strides4,        \
                                      const T*, T*, cudaStream_t);
SK_INSTANTIATE(__half)
SK_INSTANTIATE(__nv_bfloat16)
#undef SK_INSTANTIATE

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
