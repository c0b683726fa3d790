// Split-K over pixels for the grad-weight kernels of every sparsity kind: how
// many splits, the workspace of per-split partial sums (accumulation type,
// splits x total), and the second kernel that adds the splits in split order
// into the gradient. Keeping the additions in a fixed order (no atomics)
// makes the result deterministic; the split count depends only on the shape
// and the device's SM count. CUDA headers only (no torch).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {

// Upper bound on the splits (and so on the workspace: kMaxSplits x total).
constexpr int64_t kMaxSplits = 64;
constexpr int kReduceThreads = 256;

// SMs of the current device; 0 when the query fails (then nothing splits).
inline int sm_count() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) !=
          cudaSuccess) {
    cudaGetLastError();  // only a query: leave no error behind
    return 0;
  }
  return sms;
}

// Splits for `busy` (> 0) CTAs of unsplit work: enough for about 2 waves of
// 2 CTAs per SM, at most max_splits (the caller's minimum pixels per split)
// and kMaxSplits, at least 1.
inline int64_t split_count(int64_t busy, int64_t max_splits) {
  const int64_t want = 4 * int64_t{sm_count()};
  int64_t splits = busy >= want ? 1 : ceil_div(want, busy);
  if (splits > max_splits) splits = max_splits;
  if (splits > kMaxSplits) splits = kMaxSplits;
  if (splits < 1) splits = 1;
  return splits;
}

// The workspace for `splits` splits of `total` partial sums: null for one
// split, and null with splits set to 1 when it cannot be allocated (then the
// caller runs unsplit: slower, same result).
template <typename Acc>
Acc* alloc_split_partials(int64_t& splits, int64_t total, cudaStream_t stream) {
  Acc* partial = nullptr;
  if (splits > 1 && cudaMallocAsync(reinterpret_cast<void**>(&partial),
                                    splits * total * sizeof(Acc), stream) != cudaSuccess) {
    cudaGetLastError();  // no workspace: run unsplit
    partial = nullptr;
    splits = 1;
  }
  return partial;
}

// grad_values[i] = sum over splits (in order) of partial[split][i].
template <typename T>
__global__ void __launch_bounds__(kReduceThreads)
    reduce_splits_kernel(const AccT<T>* __restrict__ partial, int splits, int64_t total,
                         T* __restrict__ grad_values) {
  const int64_t step = int64_t{gridDim.x} * kReduceThreads;
  for (int64_t i = int64_t{blockIdx.x} * kReduceThreads + threadIdx.x; i < total;
       i += step) {
    AccT<T> v = partial[i];
    for (int sp = 1; sp < splits; ++sp) v += partial[sp * total + i];
    grad_values[i] = Num<T>::store(v);
  }
}

// Called right after launching the split kernel into `partial`: adds the
// splits into grad_values (unless that launch failed) and frees the
// workspace. Returns the first error.
template <typename T>
cudaError_t reduce_splits(AccT<T>* partial, int64_t splits, int64_t total, T* grad_values,
                          cudaStream_t stream) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess) {
    reduce_splits_kernel<T>
        <<<grid_for(ceil_div(total, kReduceThreads)), kReduceThreads, 0, stream>>>(
            partial, static_cast<int>(splits), total, grad_values);
    err = cudaGetLastError();
  }
  const cudaError_t free_err = cudaFreeAsync(partial, stream);
  return err != cudaSuccess ? err : free_err;
}

}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
