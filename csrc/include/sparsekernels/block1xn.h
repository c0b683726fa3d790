// The 1xN block-sparse weight as the kernels see it (the canonical,
// serialisable form lives in sparsekernels/formats/block1xn.py, which also
// validates it before any pointer below can reach a kernel).
//
// A block is N consecutive output channels of one group x one input channel x
// the whole Kh x Kw kernel. Block rows are numbered r = g * rows_per_group + q:
// row r covers output channels g*cout_g + q*N .. + N (the last row of a group
// is padded when N does not divide cout_g; padded lanes are never written).
//   row_ptr [groups*rows_per_group + 1]  int32, CSR offsets into the blocks
//   col_idx [nnzb]                       int32, input channel within the group
//   values  [nnzb, Kh, Kw, N]            N innermost
// The transposed view (for grad-input) lists, per input channel, the blocks
// that read it:
//   col_ptr   [groups*cin_g + 1]         int32, offsets into block_idx
//   block_idx [nnzb]                     int32, block ids ordered by column
//   block_row [nnzb]                     int32, the row of each of those blocks
#pragma once
#include <cstdint>

#include "conv_geometry.h"

namespace sparsekernels {

// Largest block height N the kernels accept (sparsekernels/formats/block1xn.py
// enforces the same bound): far above any N used in practice (2..64), small
// enough that no per-row buffer of N lanes can be absurd.
constexpr int32_t kMaxBlockHeight = 4096;

struct Block1xN {
  const int32_t* row_ptr;
  const int32_t* col_idx;
  int64_t nnzb;
  int32_t n;                // block height N (output channels per block)
  int64_t rows_per_group;   // ceil(cout_per_group / N)

  // Transposed topology; may be null for passes that do not need it.
  const int32_t* col_ptr;
  const int32_t* block_idx;
  const int32_t* block_row;
};

// Output channels actually covered by block row r (N, or fewer for the
// padded last row of a group).
SK_HOST_DEVICE int32_t block_row_valid(const ConvGeometry& geo,
                                       const Block1xN& blocks, int64_t r) {
  const int64_t q = r % blocks.rows_per_group;
  const int64_t left = geo.cout_per_group() - q * blocks.n;
  return static_cast<int32_t>(left < blocks.n ? left : blocks.n);
}

// First output channel of block row r.
SK_HOST_DEVICE int64_t block_row_first_out(const ConvGeometry& geo,
                                           const Block1xN& blocks, int64_t r) {
  const int64_t grp = r / blocks.rows_per_group;
  const int64_t q = r % blocks.rows_per_group;
  return grp * geo.cout_per_group() + q * blocks.n;
}

// Absolute input channel read by a block of row r with column col.
SK_HOST_DEVICE int64_t block_in_channel(const ConvGeometry& geo, const Block1xN& blocks,
                                        int64_t r, int32_t col) {
  return (r / blocks.rows_per_group) * geo.cin_per_group() + col;
}

}  // namespace sparsekernels
