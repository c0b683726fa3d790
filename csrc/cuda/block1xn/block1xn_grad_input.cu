// grad_input = conv_transpose(grad_out, W) as a gather: one thread per input
// element (NCHW order, so the stores coalesce). It walks the blocks that read
// its channel (the transposed topology) and the taps that land on it, so no
// two threads write the same element and no atomics are needed.
#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace {

constexpr int kThreads = 256;

// Contribution of kept block `blk` (in row `row`) to input pixel (ih, iw):
// every tap (kh, kw) and output pixel (oh, ow) with
//   oh*stride_h - pad_h + kh*dil_h == ih  (and likewise for w),
// summed over the row's valid lanes. `go` points at grad_out[b, 0, 0, 0].
template <typename T>
__device__ __forceinline__ AccT<T> block_contribution(
    const ConvGeometry& geo, const Block1xN& blocks, const T* values,
    const T* go, const Strides4& gs, int32_t blk, int64_t row, int ih,
    int iw) {
  const int32_t valid = block_row_valid(geo, blocks, row);
  const T* g0 = go + block_row_first_out(geo, blocks, row) * gs.c;
  const T* w0 = values + int64_t{blk} * geo.taps() * blocks.n;
  AccT<T> acc = 0;
  for (int kh = 0; kh < geo.kh; ++kh) {
    const int th = ih + geo.pad_h - kh * geo.dil_h;  // = oh * stride_h
    if (th < 0) break;  // th only decreases with kh
    if (th % geo.stride_h != 0) continue;
    const int oh = th / geo.stride_h;
    if (oh >= geo.out_h) continue;
    for (int kw = 0; kw < geo.kw; ++kw) {
      const int tw = iw + geo.pad_w - kw * geo.dil_w;
      if (tw < 0) break;
      if (tw % geo.stride_w != 0) continue;
      const int ow = tw / geo.stride_w;
      if (ow >= geo.out_w) continue;
      const T* wt = w0 + int64_t{kh * geo.kw + kw} * blocks.n;
      const T* gt = g0 + oh * gs.h + ow * gs.w;
      for (int32_t j = 0; j < valid; ++j)
        acc += Num<T>::load(wt + j) * Num<T>::load(gt + j * gs.c);
    }
  }
  return acc;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    grad_input_kernel(ConvGeometry geo, Block1xN blocks,
                      const T* __restrict__ values,
                      const T* __restrict__ grad_out, Strides4 gs,
                      T* __restrict__ grad_in, int64_t total) {
  const int64_t step = int64_t{gridDim.x} * kThreads;
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < total;
       i += step) {
    const int iw = static_cast<int>(i % geo.in_w);
    const int64_t r = i / geo.in_w;
    const int ih = static_cast<int>(r % geo.in_h);
    const int64_t bc = r / geo.in_h;  // b * cin + ci
    const int64_t ci = bc % geo.cin;
    const T* go = grad_out + (bc / geo.cin) * gs.n;

    AccT<T> acc = 0;
    for (int32_t e = blocks.col_ptr[ci]; e < blocks.col_ptr[ci + 1]; ++e)
      acc += block_contribution(geo, blocks, values, go, gs,
                                blocks.block_idx[e], blocks.block_row[e], ih,
                                iw);
    grad_in[i] = Num<T>::store(acc);
  }
}

}  // namespace

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Block1xN& blocks,
                       const T* values, const T* grad_out, Strides4 go_strides,
                       T* grad_in, cudaStream_t stream) {
  const int64_t total = geo.batch * geo.cin * geo.in_h * geo.in_w;
  if (total == 0) return cudaSuccess;
  grad_input_kernel<T><<<grid_for(ceil_div(total, kThreads)), kThreads, 0,
                         stream>>>(geo, blocks, values, grad_out, go_strides,
                                   grad_in, total);
  return cudaGetLastError();
}

#define SK_INSTANTIATE(T)                                                   \
  template cudaError_t grad_input<T>(const ConvGeometry&, const Block1xN&,  \
                                     const T*, const T*, Strides4, T*,      \
                                     cudaStream_t);
SK_FOR_EACH_DTYPE(SK_INSTANTIATE)
#undef SK_INSTANTIATE

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
