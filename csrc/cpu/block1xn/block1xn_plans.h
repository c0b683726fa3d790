// How the CPU 1xN kernels split and stage their work: the forward's work
// items and input bands, its lane-padded weights, and the per-input-channel
// block lists that grad-input and grad-weight iterate. Compiled once for the
// baseline target; the per-ISA kernels of block1xn_impl.h use them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/common/conv_layout.h"
#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace block1xn {

// How the forward splits its work. The output is cut into strips of whole
// output rows; an item is (image, strip, group, chunk of block rows). Each
// item reads its input band (the input rows under its strip, all channels of
// its group) from one place: the caller's memory when there is no padding,
// else a per-thread zero-bordered copy sized to stay in L2 while every block
// row of the chunk sweeps over it. Items need no synchronisation.
struct FwdPlan {
  FwdPlan(const ConvGeometry& geo, const Block1xN& bk, Strides4 in_s, int64_t elem_bytes,
          int num_threads)
      : copy(geo.pad_h != 0 || geo.pad_w != 0), wp(geo.in_w + 2 * geo.pad_w) {
    const int64_t cin_g = geo.cin_per_group();
    const int64_t row_bytes = std::max<int64_t>(1, cin_g * geo.stride_h * wp * elem_bytes);
    const int64_t max_rows = std::max<int64_t>(1, (160 << 10) / row_bytes);
    nstrips = (geo.out_h + max_rows - 1) / max_rows;
    strip_rows = (geo.out_h + nstrips - 1) / nstrips;
    nstrips = (geo.out_h + strip_rows - 1) / strip_rows;
    band_h = (strip_rows - 1) * geo.stride_h + int64_t(geo.kh - 1) * geo.dil_h + 1;

    // Split block rows only as far as needed to give every thread work.
    const int64_t coarse = geo.batch * nstrips * geo.groups;
    const int64_t want = 8 * int64_t(num_threads);
    const int64_t chunks =
        std::min<int64_t>(bk.rows_per_group, std::max<int64_t>(1, (want + coarse - 1) / coarse));
    chunk_rows = (bk.rows_per_group + chunks - 1) / chunks;
    chunks_per_group = (bk.rows_per_group + chunk_rows - 1) / chunk_rows;
    items = coarse * chunks_per_group;

    chan_stride = copy ? band_h * wp : in_s.c;
    const int64_t rs = copy ? wp : in_s.h, cs = copy ? 1 : in_s.w;
    tap_off = tap_offsets(geo, rs, cs);
    for (int64_t oh = 0; oh < strip_rows; ++oh)
      for (int64_t ow = 0; ow < geo.out_w; ++ow)
        pix_off.push_back(oh * geo.stride_h * rs + ow * geo.stride_w * cs);
  }

  struct Item {
    int64_t b, strip, group, row0, row1;  // block rows [row0, row1)
  };
  Item item(const ConvGeometry& geo, const Block1xN& bk, int64_t i) const {
    Item it;
    const int64_t chunk = i % chunks_per_group;
    i /= chunks_per_group;
    it.group = i % geo.groups;
    i /= geo.groups;
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
  InputBand(const ConvGeometry& geo, const FwdPlan& plan, const T* input, Strides4 s)
      : geo_(geo), plan_(plan), in_(input), s_(s) {
    if (plan.copy) {
      buf_.reset(new T[geo.cin_per_group() * plan.band_h * plan.wp]);
      filled_.assign(geo.cin_per_group(), false);
    }
  }

  // Channel 0 of the item's group at the top of its strip, with every
  // channel read by block rows [it.row0, it.row1) in place.
  const T* get(const FwdPlan::Item& it, const Block1xN& bk) {
    const int64_t cin_g = geo_.cin_per_group();
    const int64_t ih0 = it.strip * plan_.strip_rows * geo_.stride_h - geo_.pad_h;
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
    const int64_t wp = plan_.wp, pw = geo_.pad_w;
    for (int64_t r = 0; r < plan_.band_h; ++r, dst += wp) {
      const int64_t ih = ih0 + r;
      if (ih < 0 || ih >= geo_.in_h) {
        std::fill(dst, dst + wp, T(0));
        continue;
      }
      std::fill(dst, dst + pw, T(0));
      const T* xr = x + ih * s_.h;
      if (s_.w == 1) {
        std::copy(xr, xr + geo_.in_w, dst + pw);
      } else {
        for (int64_t w = 0; w < geo_.in_w; ++w) dst[pw + w] = xr[w * s_.w];
      }
      std::fill(dst + pw + geo_.in_w, dst + wp, T(0));
    }
  }

  const ConvGeometry& geo_;
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
  PackedWeights(const ConvGeometry& geo, const Block1xN& bk, const T* values, int lanes)
      : ld(round_up(bk.n, lanes)) {
    if (ld == bk.n) {
      data = values;
      return;
    }
    const int64_t steps = bk.nnzb * geo.taps();
    buf.reset(new T[steps * ld]());
    for (int64_t s = 0; s < steps; ++s)
      std::copy(values + s * bk.n, values + (s + 1) * bk.n, buf.get() + s * ld);
    data = buf.get();
  }
  int64_t ld;
  const T* data;
  std::unique_ptr<T[]> buf;
};

// Per absolute input channel, the blocks that read it and their rows (the
// transposed topology; rebuilt here if the caller did not pass it).
struct ColumnBlocks {
  ColumnBlocks(const ConvGeometry& geo, const Block1xN& bk)
      : ptr(geo.cin + 1, 0), block(bk.nnzb), row(bk.nnzb) {
    if (bk.col_ptr && bk.block_idx && bk.block_row) {
      std::copy_n(bk.col_ptr, geo.cin + 1, ptr.begin());
      std::copy_n(bk.block_idx, bk.nnzb, block.begin());
      std::copy_n(bk.block_row, bk.nnzb, row.begin());
      return;
    }
    const int64_t nrows = geo.groups * bk.rows_per_group;
    for (int64_t r = 0; r < nrows; ++r)
      for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k)
        ++ptr[block_in_channel(geo, bk, r, bk.col_idx[k]) + 1];
    for (int64_t c = 0; c < geo.cin; ++c) ptr[c + 1] += ptr[c];
    std::vector<int64_t> next(ptr.begin(), ptr.end() - 1);
    for (int64_t r = 0; r < nrows; ++r)
      for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k) {
        const int64_t at = next[block_in_channel(geo, bk, r, bk.col_idx[k])]++;
        block[at] = k, row[at] = r;
      }
  }
  std::vector<int64_t> ptr, block, row;
};

}  // namespace block1xn
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
