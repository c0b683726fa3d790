// ISA-independent pieces of the CPU 1xN block conv: data re-layouts (zero
// padding, weight lane padding, im2col rows, grad_out copies) and index
// tables. Compiled once for the baseline target; the per-ISA kernels in
// block_conv_cpu_impl.h call them. Functions containing `omp for` are called
// by every thread of the enclosing parallel region and end with its barrier.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "sparsekernels/block_1xn.h"

namespace sparsekernels {
namespace cpu {
namespace detail {

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Input offsets, relative to an output pixel's top-left input, of each tap.
inline std::vector<int64_t> tap_offsets(const ConvGeometry& g, int64_t rs,
                                        int64_t cs) {
  std::vector<int64_t> off;
  for (int kh = 0; kh < g.kh; ++kh)
    for (int kw = 0; kw < g.kw; ++kw)
      off.push_back(int64_t(kh) * g.dil_h * rs + int64_t(kw) * g.dil_w * cs);
  return off;
}

// Input offset of the top-left tap of each (flattened) output pixel.
inline std::vector<int64_t> pixel_offsets(const ConvGeometry& g, int64_t rs,
                                          int64_t cs) {
  std::vector<int64_t> off;
  off.reserve(g.out_h * g.out_w);
  for (int64_t oh = 0; oh < g.out_h; ++oh)
    for (int64_t ow = 0; ow < g.out_w; ++ow)
      off.push_back(oh * g.stride_h * rs + ow * g.stride_w * cs);
  return off;
}

// The forward's view of one input image with the padding made explicit, so
// the micro-kernel needs no bounds checks. Without padding the caller's
// memory is read in place (any strides); otherwise each image is copied into
// a zero-bordered NCHW buffer shared by the threads.
template <typename T>
class PaddedInput {
 public:
  PaddedInput(const ConvGeometry& g, const T* input, Strides4 s)
      : g_(g), in_(input), s_(s), hp_(g.in_h + 2 * g.pad_h), wp_(g.in_w + 2 * g.pad_w) {
    if (g.pad_h == 0 && g.pad_w == 0) {
      chan_stride = s.c, row_stride = s.h, col_stride = s.w;
    } else {
      buf_.reset(new T[g.cin * hp_ * wp_]);
      chan_stride = hp_ * wp_, row_stride = wp_, col_stride = 1;
    }
  }

  // Image b; with padding, fills the shared buffer (orphaned omp for).
  const T* image(int64_t b) const {
    const T* x = in_ + b * s_.n;
    if (!buf_) return x;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < g_.cin; ++c) pad_plane(x + c * s_.c, buf_.get() + c * hp_ * wp_);
    return buf_.get();
  }

  int64_t chan_stride, row_stride, col_stride;

 private:
  void pad_plane(const T* x, T* dst) const {
    std::fill(dst, dst + g_.pad_h * wp_, T(0));
    dst += g_.pad_h * wp_;
    for (int64_t h = 0; h < g_.in_h; ++h, dst += wp_) {
      std::fill(dst, dst + g_.pad_w, T(0));
      const T* xr = x + h * s_.h;
      if (s_.w == 1) {
        std::copy(xr, xr + g_.in_w, dst + g_.pad_w);
      } else {
        for (int64_t w = 0; w < g_.in_w; ++w) dst[g_.pad_w + w] = xr[w * s_.w];
      }
      std::fill(dst + g_.pad_w + g_.in_w, dst + wp_, T(0));
    }
    std::fill(dst, dst + g_.pad_h * wp_, T(0));
  }

  const ConvGeometry& g_;
  const T* in_;
  Strides4 s_;
  int64_t hp_, wp_;
  std::unique_ptr<T[]> buf_;
};

// Weights with N padded up to a whole number of vectors, [nnzb][taps][ld];
// the caller's values are used as they are when N already is.
template <typename T>
struct PackedWeights {
  PackedWeights(const ConvGeometry& g, const Block1xN& bk, const T* values, int lanes)
      : ld(round_up(bk.n, lanes)) {
    if (ld == bk.n) {
      data = values;
      return;
    }
    const int64_t steps = bk.nnzb * g.taps();
    buf.reset(new T[steps * ld]());
    for (int64_t s = 0; s < steps; ++s)
      std::copy(values + s * bk.n, values + (s + 1) * bk.n, buf.get() + s * ld);
    data = buf.get();
  }
  int64_t ld;
  const T* data;
  std::unique_ptr<T[]> buf;
};

// Layout of the grad-input scatter. grad_out is copied per image into rows
// of width go_w (zero beyond out_w), `runs` runs of run_len pixels per
// channel; run pixel i of tap t adds into the padded dx plane at
// dst_offset(run, t) + i * dst_step. For stride 1 the row width is the
// padded input width, so one run covers the whole image and the row ends need
// no special case (their zero columns land in the padding).
struct GradInputLayout {
  GradInputLayout(const ConvGeometry& g, int lanes) {
    const int64_t hp = g.in_h + 2 * g.pad_h, wp = g.in_w + 2 * g.pad_w;
    flat = g.stride_h == 1 && g.stride_w == 1;
    if (flat) {
      go_w = dx_w = wp;
      run_len = round_up(g.out_h * go_w, lanes);
      runs = 1;
    } else {
      go_w = run_len = round_up(g.out_w, lanes);
      runs = g.out_h;
      dx_w = std::max<int64_t>(wp, (go_w - 1) * g.stride_w + int64_t(g.kw - 1) * g.dil_w + 1);
    }
    go_cs = runs * run_len;
    dst_step = flat ? 1 : g.stride_w;
    const int64_t reach = dst_offset(g, runs - 1, g.taps() - 1) + (run_len - 1) * dst_step + 1;
    dx_size = std::max(hp * dx_w, reach);
  }

  int64_t dst_offset(const ConvGeometry& g, int64_t run, int t) const {
    const int64_t kh = t / g.kw, kw = t % g.kw;
    return (flat ? 0 : run * g.stride_h * dx_w) + kh * g.dil_h * dx_w + kw * g.dil_w;
  }

  // Interior of the padded plane -> one NCHW grad_input plane.
  template <typename T>
  void store_plane(const ConvGeometry& g, const T* dx, T* out) const {
    for (int64_t h = 0; h < g.in_h; ++h)
      std::copy_n(dx + (h + g.pad_h) * dx_w + g.pad_w, g.in_w, out + h * g.in_w);
  }

  bool flat;
  int64_t go_w, run_len, runs, go_cs, dx_w, dst_step, dx_size;
};

// Copies grad_out of one image into the GradInputLayout rows (orphaned omp
// for over output channels).
template <typename T>
void copy_grad_out_rows(const ConvGeometry& g, const T* go, Strides4 s,
                        const GradInputLayout& lay, T* dst) {
#pragma omp for schedule(static)
  for (int64_t o = 0; o < g.cout; ++o) {
    T* d = dst + o * lay.go_cs;
    std::fill(d, d + lay.go_cs, T(0));
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      const T* src = go + o * s.c + oh * s.h;
      T* row = d + oh * lay.go_w;
      for (int64_t ow = 0; ow < g.out_w; ++ow) row[ow] = src[ow * s.w];
    }
  }
}

// grad_out of one image as contiguous rows of out_h * out_w pixels per
// channel: in place when it already is, else copied into a shared buffer.
template <typename T>
class GradOutImage {
 public:
  GradOutImage(const ConvGeometry& g, const T* go, Strides4 s) : g_(g), go_(go), s_(s) {
    const int64_t ohw = g.out_h * g.out_w;
    if (s.w == 1 && (s.h == g.out_w || g.out_h == 1)) {
      chan_stride = s.c;
    } else {
      chan_stride = ohw;
      buf_.reset(new T[g.cout * ohw]);
    }
  }

  const T* image(int64_t b) const {
    const T* x = go_ + b * s_.n;
    if (!buf_) return x;
#pragma omp for schedule(static)
    for (int64_t o = 0; o < g_.cout; ++o) {
      T* d = buf_.get() + o * chan_stride;
      for (int64_t oh = 0; oh < g_.out_h; ++oh)
        for (int64_t ow = 0; ow < g_.out_w; ++ow)
          *d++ = x[o * s_.c + oh * s_.h + ow * s_.w];
    }
    return buf_.get();
  }

  int64_t chan_stride;

 private:
  const ConvGeometry& g_;
  const T* go_;
  Strides4 s_;
  std::unique_ptr<T[]> buf_;
};

// Kept blocks with their rows, ordered by input channel when the transposed
// topology is available (so consecutive blocks share an im2col plane).
struct BlockOrder {
  BlockOrder(const ConvGeometry& g, const Block1xN& bk) : block(bk.nnzb), row(bk.nnzb) {
    if (bk.block_idx && bk.block_row) {
      std::copy_n(bk.block_idx, bk.nnzb, block.begin());
      std::copy_n(bk.block_row, bk.nnzb, row.begin());
      return;
    }
    const int64_t nrows = g.groups * bk.rows_per_group;
    for (int64_t r = 0; r < nrows; ++r)
      for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k) block[k] = k, row[k] = r;
  }
  std::vector<int64_t> block, row;
};

// col[t * ld + oh * out_w + ow] = x[oh*sh - ph + kh*dh, ow*sw - pw + kw*dw]
// of one input plane (zero outside), t = kh * kw_count + kw.
template <typename T>
void im2col_plane(const ConvGeometry& g, const T* x, Strides4 s, T* col, int64_t ld) {
  for (int kh = 0; kh < g.kh; ++kh)
    for (int kw = 0; kw < g.kw; ++kw) {
      T* dst = col + (kh * g.kw + kw) * ld;
      const int64_t w0 = int64_t(kw) * g.dil_w - g.pad_w;
      // Output columns whose input column lies inside the image.
      const int64_t lo = std::min(g.out_w, w0 >= 0 ? 0 : (-w0 + g.stride_w - 1) / g.stride_w);
      const int64_t hi = std::max(lo, std::min(g.out_w, g.in_w - w0 <= 0 ? 0 : (g.in_w - w0 - 1) / g.stride_w + 1));
      for (int64_t oh = 0; oh < g.out_h; ++oh, dst += g.out_w) {
        const int64_t ih = oh * g.stride_h - g.pad_h + int64_t(kh) * g.dil_h;
        if (ih < 0 || ih >= g.in_h) {
          std::fill(dst, dst + g.out_w, T(0));
          continue;
        }
        const T* xr = x + ih * s.h + w0 * s.w;
        std::fill(dst, dst + lo, T(0));
        for (int64_t ow = lo; ow < hi; ++ow) dst[ow] = xr[ow * g.stride_w * s.w];
        std::fill(dst + hi, dst + g.out_w, T(0));
      }
    }
}

}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
