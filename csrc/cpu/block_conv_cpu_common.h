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

// How the forward splits its work. The output is cut into strips of whole
// output rows; an item is (image, strip, group, chunk of block rows). Each
// item reads its input band (the input rows under its strip, all channels of
// its group) from one place: the caller's memory when there is no padding,
// else a per-thread zero-bordered copy sized to stay in L2 while every block
// row of the chunk sweeps over it. Items need no synchronisation.
struct FwdPlan {
  FwdPlan(const ConvGeometry& g, const Block1xN& bk, Strides4 in_s, int64_t elem_bytes,
          int num_threads)
      : copy(g.pad_h != 0 || g.pad_w != 0), wp(g.in_w + 2 * g.pad_w) {
    const int64_t cin_g = g.cin_per_group();
    const int64_t row_bytes = std::max<int64_t>(1, cin_g * g.stride_h * wp * elem_bytes);
    const int64_t max_rows = std::max<int64_t>(1, (160 << 10) / row_bytes);
    nstrips = (g.out_h + max_rows - 1) / max_rows;
    strip_rows = (g.out_h + nstrips - 1) / nstrips;
    nstrips = (g.out_h + strip_rows - 1) / strip_rows;
    band_h = (strip_rows - 1) * g.stride_h + int64_t(g.kh - 1) * g.dil_h + 1;

    // Split block rows only as far as needed to give every thread work.
    const int64_t coarse = g.batch * nstrips * g.groups;
    const int64_t want = 8 * int64_t(num_threads);
    const int64_t chunks = std::min<int64_t>(bk.rows_per_group, std::max<int64_t>(1, (want + coarse - 1) / coarse));
    chunk_rows = (bk.rows_per_group + chunks - 1) / chunks;
    chunks_per_group = (bk.rows_per_group + chunk_rows - 1) / chunk_rows;
    items = coarse * chunks_per_group;

    chan_stride = copy ? band_h * wp : in_s.c;
    const int64_t rs = copy ? wp : in_s.h, cs = copy ? 1 : in_s.w;
    tap_off = tap_offsets(g, rs, cs);
    for (int64_t oh = 0; oh < strip_rows; ++oh)
      for (int64_t ow = 0; ow < g.out_w; ++ow)
        pix_off.push_back(oh * g.stride_h * rs + ow * g.stride_w * cs);
  }

  struct Item {
    int64_t b, strip, group, row0, row1;  // block rows [row0, row1)
  };
  Item item(const ConvGeometry& g, const Block1xN& bk, int64_t i) const {
    Item it;
    const int64_t chunk = i % chunks_per_group;
    i /= chunks_per_group;
    it.group = i % g.groups;
    i /= g.groups;
    it.strip = i % nstrips;
    it.b = i / nstrips;
    it.row0 = it.group * bk.rows_per_group + chunk * chunk_rows;
    it.row1 = std::min(it.row0 + chunk_rows, (it.group + 1) * bk.rows_per_group);
    return it;
  }

  bool copy;
  int64_t wp, nstrips, strip_rows, band_h, chunk_rows, chunks_per_group, items;
  int64_t chan_stride;  // of the band; rows and columns are in the offsets
  std::vector<int64_t> tap_off, pix_off;  // pix_off: pixels of a full strip
};

// One thread's view of input bands (see FwdPlan). A copied band only gets
// the channels that the item's blocks read: at high sparsity most are unused.
template <typename T>
class InputBand {
 public:
  InputBand(const ConvGeometry& g, const FwdPlan& plan, const T* input, Strides4 s)
      : g_(g), plan_(plan), in_(input), s_(s) {
    if (plan.copy) {
      buf_.reset(new T[g.cin_per_group() * plan.band_h * plan.wp]);
      filled_.assign(g.cin_per_group(), false);
    }
  }

  // Channel 0 of the item's group at the top of its strip, with every
  // channel read by block rows [it.row0, it.row1) in place.
  const T* get(const FwdPlan::Item& it, const Block1xN& bk) {
    const int64_t cin_g = g_.cin_per_group();
    const int64_t ih0 = it.strip * plan_.strip_rows * g_.stride_h - g_.pad_h;
    const T* x = in_ + it.b * s_.n + it.group * cin_g * s_.c;
    if (!plan_.copy) return x + ih0 * s_.h;
    if (it.b != b_ || it.strip != strip_ || it.group != grp_) {
      std::fill(filled_.begin(), filled_.end(), false);
      b_ = it.b, strip_ = it.strip, grp_ = it.group;
    }
    for (int32_t k = bk.row_ptr[it.row0]; k < bk.row_ptr[it.row1]; ++k) {
      const int32_t c = bk.col_idx[k];
      if (filled_[c]) continue;
      fill_plane(x + c * s_.c, ih0, buf_.get() + c * plan_.chan_stride);
      filled_[c] = true;
    }
    return buf_.get();
  }

 private:
  void fill_plane(const T* x, int64_t ih0, T* dst) const {
    const int64_t wp = plan_.wp, pw = g_.pad_w;
    for (int64_t r = 0; r < plan_.band_h; ++r, dst += wp) {
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= g_.in_h) {
        std::fill(dst, dst + wp, T(0));
        continue;
      }
      std::fill(dst, dst + pw, T(0));
      const T* xr = x + ih * s_.h;
      if (s_.w == 1) {
        std::copy(xr, xr + g_.in_w, dst + pw);
      } else {
        for (int64_t w = 0; w < g_.in_w; ++w) dst[pw + w] = xr[w * s_.w];
      }
      std::fill(dst + pw + g_.in_w, dst + wp, T(0));
    }
  }

  const ConvGeometry& g_;
  const FwdPlan& plan_;
  const T* in_;
  Strides4 s_;
  std::unique_ptr<T[]> buf_;
  std::vector<bool> filled_;  // per channel of the current band
  int64_t b_ = -1, strip_ = -1, grp_ = -1;
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
// channel; run pixel i of the tap at position t of tap_order adds into the
// padded dx plane at dst_off[run * taps + t] + i * dst_step. For stride 1 the row width is the
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
    // Taps column-major: consecutive taps (one register tile) then add into
    // rows a full row apart instead of overlapping vectors one column apart,
    // which would stall store-to-load forwarding.
    for (int kw = 0; kw < g.kw; ++kw)
      for (int kh = 0; kh < g.kh; ++kh) tap_order.push_back(kh * g.kw + kw);
    for (int64_t run = 0; run < runs; ++run)
      for (int t : tap_order) dst_off.push_back(dst_offset(g, run, t));
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
  std::vector<int> tap_order;     // processing order of the taps
  std::vector<int64_t> dst_off;  // [runs][position in tap_order]
};

// Images handled per pass when grad_out must be re-laid out first: bounds
// that copy to ~64 MiB however large the batch.
inline int64_t images_per_group(int64_t bytes_per_image, int64_t batch) {
  return std::max<int64_t>(1, std::min<int64_t>(batch, (int64_t(64) << 20) / std::max<int64_t>(1, bytes_per_image)));
}

// Copies grad_out of `nb` images into the GradInputLayout rows (orphaned omp
// for over (image, output channel)).
template <typename T>
void copy_grad_out_rows(const ConvGeometry& g, const T* go, Strides4 s, int64_t nb,
                        const GradInputLayout& lay, T* dst) {
#pragma omp for schedule(static)
  for (int64_t i = 0; i < nb * g.cout; ++i) {
    const int64_t b = i / g.cout, o = i % g.cout;
    T* d = dst + i * lay.go_cs;
    std::fill(d, d + lay.go_cs, T(0));
    for (int64_t oh = 0; oh < g.out_h; ++oh) {
      const T* src = go + b * s.n + o * s.c + oh * s.h;
      T* row = d + oh * lay.go_w;
      for (int64_t ow = 0; ow < g.out_w; ++ow) row[ow] = src[ow * s.w];
    }
  }
}

// grad_out with each channel's out_h * out_w pixels contiguous, as the
// grad-weight dot products want it: the caller's memory when it already is
// so, else a copy of a group of images at a time.
template <typename T>
class GradOutRows {
 public:
  GradOutRows(const ConvGeometry& g, const T* go, Strides4 s) : g_(g), go_(go), s_(s) {
    const int64_t ohw = g.out_h * g.out_w;
    if (s.w == 1 && (s.h == g.out_w || g.out_h == 1)) {
      chan_stride = s.c, img_stride = s.n, group = g.batch;
    } else {
      chan_stride = ohw, img_stride = g.cout * ohw;
      group = images_per_group(img_stride * sizeof(T), g.batch);
      buf_.reset(new T[group * img_stride]);
    }
  }

  // Makes images [b0, b0 + nb) available (orphaned omp for when copying).
  void load(int64_t b0, int64_t nb) {
    base_ = go_ + b0 * s_.n;
    if (!buf_) return;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < nb * g_.cout; ++i) {
      const int64_t b = i / g_.cout, o = i % g_.cout;
      const T* x = go_ + (b0 + b) * s_.n + o * s_.c;
      T* d = buf_.get() + i * chan_stride;
      for (int64_t oh = 0; oh < g_.out_h; ++oh)
        for (int64_t ow = 0; ow < g_.out_w; ++ow) *d++ = x[oh * s_.h + ow * s_.w];
    }
  }

  // Image b of the loaded group.
  const T* image(int64_t b) const { return (buf_ ? buf_.get() : base_) + b * img_stride; }

  int64_t chan_stride, img_stride, group;

 private:
  const ConvGeometry& g_;
  const T* go_;
  Strides4 s_;
  const T* base_ = nullptr;
  std::unique_ptr<T[]> buf_;
};

// Per absolute input channel, the blocks that read it and their rows (the
// transposed topology; rebuilt here if the caller did not pass it).
struct ColumnBlocks {
  ColumnBlocks(const ConvGeometry& g, const Block1xN& bk)
      : ptr(g.cin + 1, 0), block(bk.nnzb), row(bk.nnzb) {
    if (bk.col_ptr && bk.block_idx && bk.block_row) {
      std::copy_n(bk.col_ptr, g.cin + 1, ptr.begin());
      std::copy_n(bk.block_idx, bk.nnzb, block.begin());
      std::copy_n(bk.block_row, bk.nnzb, row.begin());
      return;
    }
    const int64_t nrows = g.groups * bk.rows_per_group;
    for (int64_t r = 0; r < nrows; ++r)
      for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k)
        ++ptr[block_in_channel(g, bk, r, bk.col_idx[k]) + 1];
    for (int64_t c = 0; c < g.cin; ++c) ptr[c + 1] += ptr[c];
    std::vector<int64_t> next(ptr.begin(), ptr.end() - 1);
    for (int64_t r = 0; r < nrows; ++r)
      for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k) {
        const int64_t at = next[block_in_channel(g, bk, r, bk.col_idx[k])]++;
        block[at] = k, row[at] = r;
      }
  }
  std::vector<int64_t> ptr, block, row;
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
