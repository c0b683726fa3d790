// Shared pieces of the stripe-sparse CUDA kernels: the typed launchers behind
// the public entry points in stripe_cuda.h (each in its own .cu, explicitly
// instantiated there, so they compile in parallel), the CTA tile shape and
// the register micro-tile every kernel runs on staged shared-memory operands.
//
// All three passes are per-tap GEMMs over the transposed view (column
// (g, tap) -> the stripes of group g at that kernel position, output channels
// ascending):
//   forward     out[O_k, px]     += W[O_k, Cin/g]  * X_shift_k[Cin/g, px]
//   grad-input  dX[Cin/g, ipx]   += W[O_k, Cin/g]^T * dY_shift_k[O_k, ipx]
//   grad-weight dW[O_k, Cin/g]    = dY[O_k, px]    * X_shift_k[px, Cin/g]^T
// A CTA tile is kTileM x kTileN outputs; K is staged kBK at a time as two
// k-major shared arrays; 256 threads each own a 4 x 4 micro-tile (rows
// 4*ty .. 4*ty+3, columns tx + 16*j), so the A reads are 16-byte broadcasts
// and the B reads hit 16 consecutive words. All return cudaSuccess when there
// is nothing to launch.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/dtype.cuh"
#include "sparsekernels/stripe.h"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace stripe {

constexpr int kThreads = 256;
constexpr int kTileM = 64;  // rows of a tile (stripes, or input channels)
constexpr int kTileN = 64;  // columns of a tile (pixels, or input channels)
constexpr int kLd = kTileM + 4;  // padded row: 16-byte aligned, 2-way stores
static_assert(kTileM == kTileN, "the staging loops assume a square tile");
static_assert(kThreads == 4 * kTileM, "4 x 4 micro-tiles cover the tile");

// K depth of one staged step: 16 (fp32 accumulate), 8 for fp64 (same bytes).
template <typename Acc>
constexpr int kDepth = sizeof(Acc) == 8 ? 8 : 16;

// The k-major operands of one step: a[k][row], b[k][column].
template <typename Acc, int BK>
struct Operands {
  Acc a[BK][kLd];
  Acc b[BK][kLd];
};

// acc[i][j] (row 4*ty + i, column tx + 16*j) += sum_k a[k][row] * b[k][col].
template <typename Acc, int BK>
__device__ __forceinline__ void micro_tile(const Operands<Acc, BK>& s, int tx,
                                           int ty, Acc (&acc)[4][4]) {
#pragma unroll
  for (int k = 0; k < BK; ++k) {
    Acc a[4], b[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = s.a[k][4 * ty + i];
#pragma unroll
    for (int j = 0; j < 4; ++j) b[j] = s.b[k][tx + 16 * j];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
  }
}

// First index e in [lo, hi) with row[e] >= value (row ascending there).
__device__ __forceinline__ int32_t lower_bound(const int32_t* row, int32_t lo,
                                               int32_t hi, int64_t value) {
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (__ldg(row + mid) < value) lo = mid + 1; else hi = mid;
  }
  return lo;
}

template <typename T>
cudaError_t forward(const ConvGeometry& geo, const Stripes& stripes,
                    const T* values, const T* input, Strides4 in_strides,
                    const T* bias, T* output, cudaStream_t stream);

// Tensor-core forward (stripe_forward_mma.cu); T is __half or __nv_bfloat16.
template <typename T>
cudaError_t forward_mma(const ConvGeometry& geo, const Stripes& stripes,
                        const T* values, const T* input, Strides4 in_strides,
                        const T* bias, T* output, cudaStream_t stream);

// True when the tensor-core kernel was built for (and so runs on) the
// current device: its machine code is sm_80 or newer.
bool forward_mma_available();

template <typename T>
cudaError_t grad_input(const ConvGeometry& geo, const Stripes& stripes,
                       const T* values, const T* grad_out, Strides4 go_strides,
                       T* grad_in, cudaStream_t stream);

template <typename T>
cudaError_t grad_weight(const ConvGeometry& geo, const Stripes& stripes,
                        const T* input, Strides4 in_strides, const T* grad_out,
                        Strides4 go_strides, T* grad_values,
                        cudaStream_t stream);

}  // namespace stripe
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
