// Helpers every sparsity kind's CPU kernels share, compiled once for the
// baseline target (the per-ISA kernels call them); the activation layouts
// are in wide_layout.h.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#include "sparsekernels/conv_geometry.h"

namespace sparsekernels {
namespace cpu {
namespace detail {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// f(std::integral_constant<int, r>) for a run-time r in [1, N].
template <int N, typename F>
inline void with_count(int r, F&& f) {
  if constexpr (N >= 1) {
    if (r == N) {
      f(std::integral_constant<int, N>{});
    } else {
      with_count<N - 1>(r, f);
    }
  }
}

// Images a wide layout holds at once: bounds its copy to ~64 MiB however
// large the batch.
inline int64_t images_per_group(int64_t bytes_per_image, int64_t batch) {
  return std::max<int64_t>(
      1, std::min<int64_t>(batch, (int64_t(64) << 20) / std::max<int64_t>(1, bytes_per_image)));
}

// Threads worth starting for `macs` multiply-adds: a parallel region's fork
// and join cost ~5 us on 2 cores, as much as a small layer's whole kernel at
// high sparsity (CIFAR ResNets at batch 1), where a second thread would wait
// on one work item anyway.
inline int threads_for(double macs, int num_threads) {
  constexpr double kMacsPerThread = double(1 << 19);
  return static_cast<int>(std::max(1.0, std::min<double>(num_threads, macs / kMacsPerThread)));
}

// Whether any of v[0 .. n) is NaN or infinite (v - v is NaN exactly for
// those).
template <typename T>
bool any_nonfinite(const T* v, int64_t n) {
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) bad |= (v[i] - v[i]) != (v[i] - v[i]);
  return bad;
}

}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
