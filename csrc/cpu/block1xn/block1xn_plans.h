// Index helpers of the CPU 1xN kernels (the activation layouts they sweep
// are those of cpu/common/wide_layout.h). Compiled once for the baseline
// target; the per-ISA kernels of block1xn_impl.h use them.
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

// Multiply-adds of one pass of the conv (each pass does as many).
inline double block_macs(const ConvGeometry& geo, const Block1xN& bk) {
  return double(geo.batch) * geo.out_h * geo.out_w * bk.nnzb * geo.taps() * bk.n;
}

}  // namespace block1xn
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
