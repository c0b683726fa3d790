// Data re-layouts any sparsity kind's CPU kernels can use: input tap
// offsets, the 1xN grad-input scatter layout and grad_out copied into its
// rows (the wide layouts are in wide_layout.h). They depend on the conv
// geometry only, never on how the weight is sparse, and are compiled once for
// the baseline target (the per-ISA kernels call them). Functions containing `omp for` are called by every
// thread of the enclosing parallel region and end with its barrier.
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

// Input offsets, relative to an output pixel's top-left input, of each tap.
inline std::vector<int64_t> tap_offsets(const ConvGeometry& geo, int64_t rs,
                                        int64_t cs) {
  std::vector<int64_t> off;
  for (int kh = 0; kh < geo.kh; ++kh)
    for (int kw = 0; kw < geo.kw; ++kw)
      off.push_back(int64_t(kh) * geo.dil_h * rs + int64_t(kw) * geo.dil_w * cs);
  return off;
}

// Layout of the grad-input scatter. grad_out is copied per image into rows
// of width go_w (zero beyond out_w), `runs` runs of run_len pixels per
// channel; run pixel i of the tap at position t of tap_order adds into the
// padded dx plane at dst_off[run * taps + t] + i * dst_step. For stride 1 the row width is the
// padded input width, so one run covers the whole image and the row ends need
// no special case (their zero columns land in the padding).
struct GradInputLayout {
  GradInputLayout(const ConvGeometry& geo, int lanes) {
    const int64_t hp = geo.in_h + 2 * geo.pad_h, wp = geo.in_w + 2 * geo.pad_w;
    flat = geo.stride_h == 1 && geo.stride_w == 1;
    if (flat) {
      go_w = dx_w = wp;
      run_len = round_up(geo.out_h * go_w, lanes);
      runs = 1;
    } else {
      go_w = run_len = round_up(geo.out_w, lanes);
      runs = geo.out_h;
      dx_w = std::max<int64_t>(wp, (go_w - 1) * geo.stride_w + int64_t(geo.kw - 1) * geo.dil_w + 1);
    }
    go_cs = runs * run_len;
    dst_step = flat ? 1 : geo.stride_w;
    const int64_t reach = dst_offset(geo, runs - 1, geo.taps() - 1) + (run_len - 1) * dst_step + 1;
    dx_size = std::max(hp * dx_w, reach);
    // Taps column-major: consecutive taps (one register tile) then add into
    // rows a full row apart instead of overlapping vectors one column apart,
    // which would stall store-to-load forwarding.
    for (int kw = 0; kw < geo.kw; ++kw)
      for (int kh = 0; kh < geo.kh; ++kh) tap_order.push_back(kh * geo.kw + kw);
    for (int64_t run = 0; run < runs; ++run)
      for (int t : tap_order) dst_off.push_back(dst_offset(geo, run, t));
  }

  int64_t dst_offset(const ConvGeometry& geo, int64_t run, int t) const {
    const int64_t kh = t / geo.kw, kw = t % geo.kw;
    return (flat ? 0 : run * geo.stride_h * dx_w) + kh * geo.dil_h * dx_w + kw * geo.dil_w;
  }

  // Interior of the padded plane -> one NCHW grad_input plane.
  template <typename T>
  void store_plane(const ConvGeometry& geo, const T* dx, T* out) const {
    for (int64_t h = 0; h < geo.in_h; ++h)
      std::copy_n(dx + (h + geo.pad_h) * dx_w + geo.pad_w, geo.in_w, out + h * geo.in_w);
  }

  bool flat;
  int64_t go_w, run_len, runs, go_cs, dx_w, dst_step, dx_size;
  std::vector<int> tap_order;     // processing order of the taps
  std::vector<int64_t> dst_off;  // [runs][position in tap_order]
};

// Images handled per pass when grad_out must be re-laid out first: bounds
// that copy to ~64 MiB however large the batch.
inline int64_t images_per_group(int64_t bytes_per_image, int64_t batch) {
  return std::max<int64_t>(
      1, std::min<int64_t>(batch, (int64_t(64) << 20) / std::max<int64_t>(1, bytes_per_image)));
}

// Copies grad_out of `nb` images into the GradInputLayout rows (orphaned omp
// for over (image, output channel)).
template <typename T>
void copy_grad_out_rows(const ConvGeometry& geo, const T* go, Strides4 s, int64_t nb,
                        const GradInputLayout& lay, T* dst) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < nb * geo.cout; ++i) {
    const int64_t b = i / geo.cout, o = i % geo.cout;
    T* d = dst + i * lay.go_cs;
    std::fill(d, d + lay.go_cs, T(0));
    for (int64_t oh = 0; oh < geo.out_h; ++oh) {
      const T* src = go + b * s.n + o * s.c + oh * s.h;
      T* row = d + oh * lay.go_w;
      for (int64_t ow = 0; ow < geo.out_w; ++ow) row[ow] = src[ow * s.w];
    }
  }
}

}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
