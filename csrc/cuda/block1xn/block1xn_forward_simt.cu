// CUDA-core forward: the correctness path for every dtype and block height N.
// One thread per output pixel (flattened over batch x out_h x out_w), one CTA
// per (tile of kThreads pixels, block row, tile of NT lanes). Each thread
// walks its row's kept blocks and taps and keeps NT outputs in registers.
#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace {

constexpr int kThreads = 128;

// Sum over the row's kept blocks and taps for one pixel and lanes
// lane0 .. lane0 + NT of the row.
template <typename T, int NT>
__device__ __forceinline__ void accumulate_pixel(
    const ConvGeometry& geo, const Block1xN& blocks, const T* values,
    const T* input, const Strides4& is, const PixelOrigin& px, int64_t row,
    int lane0, AccT<T> (&acc)[NT]) {
  const int64_t cin0 = block_in_channel(geo, blocks, row, 0);
  const int64_t tap_stride = blocks.n;
  for (int32_t k = blocks.row_ptr[row]; k < blocks.row_ptr[row + 1]; ++k) {
    // Offsets stay integers until in bounds: px.offset alone may point
    // before the image (negative ih0 / iw0 under padding).
    const int64_t x = px.offset + (cin0 + blocks.col_idx[k]) * is.c;
    const T* w = values + int64_t{k} * geo.taps() * tap_stride + lane0;
    for (int kh = 0; kh < geo.kh; ++kh) {
      const int dy = kh * geo.dil_h;
      for (int kw = 0; kw < geo.kw; ++kw) {
        const int dx = kw * geo.dil_w;
        if (!inside(px.ih0 + dy, px.iw0 + dx, geo)) continue;
        const AccT<T> xv = Num<T>::load(input + (x + dy * is.h + dx * is.w));
        const T* wt = w + (kh * geo.kw + kw) * tap_stride;
#pragma unroll
        for (int j = 0; j < NT; ++j) acc[j] += xv * Num<T>::load(wt + j);
      }
    }
  }
}

template <typename T, int NT>
__global__ void __launch_bounds__(kThreads)
    forward_simt_kernel(ConvGeometry geo, Block1xN blocks,
                        const T* __restrict__ values,
                        const T* __restrict__ input, Strides4 is,
                        const T* __restrict__ bias, T* __restrict__ output,
                        int64_t rows, int chunks, int64_t work) {
  const int64_t plane = geo.out_h * geo.out_w;
  // Rows vary fastest so CTAs resident together read the same input pixels.
  for (int64_t w = blockIdx.x; w < work; w += gridDim.x) {
    const int lane0 = static_cast<int>(w % chunks) * NT;
    const int64_t row = (w / chunks) % rows;
    const int64_t m = (w / chunks / rows) * kThreads + threadIdx.x;
    const PixelOrigin px = pixel_origin(geo, is, m);
    if (!px.ok) continue;

    AccT<T> acc[NT];
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[j] = 0;
    accumulate_pixel<T, NT>(geo, blocks, values, input, is, px, row, lane0,
                            acc);

    // Lanes past the row's valid count are padding: never written.
    const int32_t valid = block_row_valid(geo, blocks, row);
    const int64_t o0 = block_row_first_out(geo, blocks, row) + lane0;
    const int64_t b = m / plane;
    T* out = output + (b * geo.cout + o0) * plane + (m - b * plane);
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      if (lane0 + j >= valid) break;
      AccT<T> v = acc[j];
      if (bias != nullptr) v += Num<T>::load(bias + o0 + j);
      out[j * plane] = Num<T>::store(v);
    }
  }
}

}  // namespace

template <typename T>
cudaError_t forward_simt(const ConvGeometry& geo, const Block1xN& blocks,
                         const T* values, const T* input, Strides4 in_strides,
                         const T* bias, T* output, cudaStream_t stream) {
  const int64_t pixels = geo.batch * geo.out_h * geo.out_w;
  const int64_t rows = geo.groups * blocks.rows_per_group;
  return with_lane_tile(blocks.n, [&](auto nt) -> cudaError_t {
    constexpr int NT = decltype(nt)::value;
    const int chunks = blocks.n / NT;
    const int64_t work = ceil_div(pixels, kThreads) * rows * chunks;
    if (work == 0) return cudaSuccess;
    forward_simt_kernel<T, NT><<<grid_for(work), kThreads, 0, stream>>>(
        geo, blocks, values, input, in_strides, bias, output, rows, chunks,
        work);
    return cudaGetLastError();
  });
}

#define SK_INSTANTIATE(T)                                                   \
  template cudaError_t forward_simt<T>(const ConvGeometry&, const Block1xN&, \
                                       const T*, const T*, Strides4,        \
                                       const T*, T*, cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
