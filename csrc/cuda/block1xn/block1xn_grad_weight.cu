// grad_values[blk, kh, kw, lane] = sum over (b, oh, ow) of
//   grad_out[b, o(lane), oh, ow] * input[b, c, oh*sh - ph + kh*dh, ow*sw - pw + kw*dw].
// One CTA owns one (kept block, tap, tile of NT lanes) slice: its threads
// stride over the batch x output pixels, then reduce in shared memory. Every
// slice has a single writer, so the result is deterministic and needs no
// atomics or workspace.
#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// Row r with row_ptr[r] <= blk < row_ptr[r + 1] (rows may be empty).
__device__ __forceinline__ int64_t row_of_block(const int32_t* row_ptr,
                                                int64_t rows, int64_t blk) {
  int64_t lo = 0, hi = rows;  // invariant: row_ptr[lo] <= blk < row_ptr[hi]
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (row_ptr[mid] <= blk) lo = mid; else hi = mid;
  }
  return lo;
}

// This thread's partial sums for lanes 0 .. nl-1 of the tile (nl <= NT);
// `x` points at input[0, c], `go` at grad_out[0, first lane of the tile].
template <typename T, int NT>
__device__ __forceinline__ void accumulate_slice(
    const ConvGeometry& geo, const T* x, const Strides4& is, const T* go,
    const Strides4& gs, int dy, int dx, int nl, AccT<T> (&acc)[NT]) {
  const int ow_n = static_cast<int>(geo.out_w);
  const int64_t plane = geo.out_h * geo.out_w;
  // Walk p = tid, tid + kThreads, ... carrying (oh, ow) instead of dividing.
  const int oh_step = kThreads / ow_n;
  const int ow_step = kThreads % ow_n;
  const int oh_first = threadIdx.x / ow_n;
  const int ow_first = threadIdx.x % ow_n;
  for (int64_t b = 0; b < geo.batch; ++b) {
    const T* xb = x + b * is.n;
    const T* gb = go + b * gs.n;
    int oh = oh_first, ow = ow_first;
    for (int64_t p = threadIdx.x; p < plane; p += kThreads) {
      const int ih = oh * geo.stride_h + dy;
      const int iw = ow * geo.stride_w + dx;
      if (inside(ih, iw, geo)) {
        const AccT<T> xv = Num<T>::load(xb + ih * is.h + iw * is.w);
        const T* g = gb + oh * gs.h + ow * gs.w;
#pragma unroll
        for (int j = 0; j < NT; ++j)
          if (j < nl) acc[j] += xv * Num<T>::load(g + j * gs.c);
      }
      oh += oh_step;
      ow += ow_step;
      if (ow >= ow_n) {
        ow -= ow_n;
        ++oh;
      }
    }
  }
}

// Sum acc[j] over the CTA; thread j < NT receives lane j's total.
template <typename Acc, int NT>
__device__ __forceinline__ Acc cta_sum(const Acc (&acc)[NT],
                                       Acc (&partial)[kWarps][NT]) {
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < NT; ++j) {
    Acc v = acc[j];
#pragma unroll
    for (int off = 16; off > 0; off /= 2)
      v += __shfl_down_sync(0xffffffffu, v, off);
    if (lane == 0) partial[warp][j] = v;
  }
  __syncthreads();
  Acc total = 0;
  if (threadIdx.x < NT)
    for (int w = 0; w < kWarps; ++w) total += partial[w][threadIdx.x];
  __syncthreads();  // partial is reused by the next slice
  return total;
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads)
    grad_weight_kernel(ConvGeometry geo, Block1xN blocks,
                       const T* __restrict__ input, Strides4 is,
                       const T* __restrict__ grad_out, Strides4 gs,
                       T* __restrict__ grad_values, int64_t rows, int chunks,
                       int64_t work) {
  __shared__ AccT<T> partial[kWarps][NT];
  const int taps = geo.taps();
  const bool has_pixels = geo.batch > 0 && geo.out_h > 0 && geo.out_w > 0;
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int lane0 = static_cast<int>(w % chunks) * NT;
    const int tap = static_cast<int>((w / chunks) % taps);
    const int64_t blk = w / chunks / taps;
    const int64_t row = row_of_block(blocks.row_ptr, rows, blk);
    // Lanes of this tile that exist; the rest are padding and get 0.
    const int nl = block_row_valid(geo, blocks, row) - lane0;

    AccT<T> acc[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j] = 0;
    if (nl > 0 && has_pixels) {
      const int64_t c = block_in_channel(geo, blocks, row, blocks.col_idx[blk]);
      const int64_t o = block_row_first_out(geo, blocks, row) + lane0;
      const int dy = (tap / geo.kw) * geo.dil_h - geo.pad_h;
      const int dx = (tap % geo.kw) * geo.dil_w - geo.pad_w;
      accumulate_slice<T, NT>(geo, input + c * is.c, is, grad_out + o * gs.c,
                              gs, dy, dx, nl, acc);
    }
    const AccT<T> total = cta_sum(acc, partial);
    if (threadIdx.x < NT) {
      const int j = threadIdx.x;
      grad_values[(blk * taps + tap) * blocks.n + lane0 + j] =
          Num<T>::store(j < nl ? total : AccT<T>(0));
    }
  }
}

}  // namespace

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Block1xN& blocks,
                        const T* input, Strides4 in_strides, const T* grad_out,
                        Strides4 go_strides, T* grad_values,
                        cudaStream_t stream) {
  const int64_t rows = geo.groups * blocks.rows_per_group;
  return with_lane_tile(blocks.n, [&](auto nt) -> cudaError_t {
    constexpr int NT = decltype(nt)::value;
    const int chunks = blocks.n / NT;
    const int64_t work = blocks.nnzb * geo.taps() * chunks;
    if (work == 0) return cudaSuccess;
    grad_weight_kernel<T, NT><<<grid_for(work), kThreads, 0, stream>>>(
        geo, blocks, input, in_strides, grad_out, go_strides, grad_values,
        rows, chunks, work);
    return cudaGetLastError();
  });
}

#define SK_INSTANTIATE(T)                                                     \
  template cudaError_t grad_weight<T>(const ConvGeometry&, const Block1xN&,   \
                                      const T*, Strides4, const T*, Strides4, \
                                      T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
