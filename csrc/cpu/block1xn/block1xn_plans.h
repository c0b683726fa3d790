// How the CPU 1xN kernels stage their work: the per-input-channel block
// lists that grad-input and grad-weight iterate (the forward sweeps the wide
// input of cpu/common/wide_layout.h). Compiled once for the
// baseline target; the per-ISA kernels of block1xn_impl.h use them.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/common/conv_layout.h"
#include "cpu/common/wide_layout.h"
#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace block1xn {

// Per absolute input channel, whether any kept block reads it.
inline std::vector<char> channels_read(const ConvGeometry& geo, const Block1xN& bk) {
  std::vector<char> read(geo.cin, 0);
  const int64_t nrows = geo.groups * bk.rows_per_group;
  for (int64_t r = 0; r < nrows; ++r)
    for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k)
      read[block_in_channel(geo, bk, r, bk.col_idx[k])] = 1;
  return read;
}

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
