// Data re-layouts any sparsity kind's CPU kernels can use: input tap and
// pixel offsets, the grad-input scatter layout, grad_out copied into rows,
// im2col planes. They depend on the conv geometry only, never on how the
// weight is sparse, and are compiled once for the baseline target (the per-ISA
// kernels call them). Functions containing `omp for` are called by every
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

// grad_out with each channel's out_h * out_w pixels contiguous, as the
// grad-weight dot products want it: the caller's memory when it already is
// so, else a copy of a group of images at a time.
template <typename T>
class GradOutRows {
 public:
  GradOutRows(const ConvGeometry& geo, const T* go, Strides4 s) : geo_(geo), go_(go), s_(s) {
    const int64_t ohw = geo.out_h * geo.out_w;
    if (s.w == 1 && (s.h == geo.out_w || geo.out_h == 1)) {
      chan_stride = s.c, img_stride = s.n, group = geo.batch;
    } else {
      chan_stride = ohw, img_stride = geo.cout * ohw;
      group = images_per_group(img_stride * sizeof(T), geo.batch);
      buf_.reset(new T[group * img_stride]);
    }
  }

  // Makes images [b0, b0 + nb) available (orphaned omp for when copying).
  void load(int64_t b0, int64_t nb) {
    base_ = go_ + b0 * s_.n;
    if (!buf_) return;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < nb * geo_.cout; ++i) {
      const int64_t b = i / geo_.cout, o = i % geo_.cout;
      const T* x = go_ + (b0 + b) * s_.n + o * s_.c;
      T* d = buf_.get() + i * chan_stride;
      for (int64_t oh = 0; oh < geo_.out_h; ++oh)
        for (int64_t ow = 0; ow < geo_.out_w; ++ow) *d++ = x[oh * s_.h + ow * s_.w];
    }
  }

  // Image b of the loaded group.
  const T* image(int64_t b) const { return (buf_ ? buf_.get() : base_) + b * img_stride; }

  int64_t chan_stride, img_stride, group;

 private:
  const ConvGeometry& geo_;
  const T* go_;
  Strides4 s_;
  const T* base_ = nullptr;
  std::unique_ptr<T[]> buf_;
};

// col[t * ld + oh * out_w + ow] = x[oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
// of one input plane (zero outside), t = kh * kw_count + kw.
template <typename T>
void im2col_plane(const ConvGeometry& geo, const T* x, Strides4 s, T* col, int64_t ld) {
  for (int kh = 0; kh < geo.kh; ++kh)
    for (int kw = 0; kw < geo.kw; ++kw) {
      T* dst = col + (kh * geo.kw + kw) * ld;
      const int64_t w0 = int64_t(kw) * geo.dil_w - geo.pad_w;
      // Output columns whose input column lies inside the image.
      const int64_t lo = std::min(geo.out_w, w0 >= 0 ? 0 : (-w0 + geo.stride_w - 1) / geo.stride_w);
      const int64_t hi = std::max(
          lo, std::min(geo.out_w, geo.in_w - w0 <= 0 ? 0 : (geo.in_w - w0 - 1) / geo.stride_w + 1));
      for (int64_t oh = 0; oh < geo.out_h; ++oh, dst += geo.out_w) {
        const int64_t ih = oh * geo.stride_h - geo.pad_h + int64_t(kh) * geo.dil_h;
        if (ih < 0 || ih >= geo.in_h) {
          std::fill(dst, dst + geo.out_w, T(0));
          continue;
        }
        const T* xr = x + ih * s.h + w0 * s.w;
        std::fill(dst, dst + lo, T(0));
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = xr[ow * geo.stride_w * s.w];
        std::fill(dst + hi, dst + geo.out_w, T(0));
      }
    }
}

}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
