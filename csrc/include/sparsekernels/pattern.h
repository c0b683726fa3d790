// The pattern-sparse weight as the kernels see it (the canonical, serialisable
// form lives in sparsekernels/formats/pattern.py, which validates it; the
// bindings check it again before any pointer below can reach a kernel).
//
// Each Kh x Kw kernel W[o, i] keeps the positions of one pattern of a small
// per-layer library, or is dropped whole (PatDNN's kernel pattern plus
// connectivity pruning). Positions are taps t = kh * Kw + kw.
//   pattern_ptr  [num_patterns + 1]  int32, CSR offsets over patterns
//   pattern_taps [pattern_ptr[P]]    int32, each pattern's taps, strictly
//                                    increasing, every pattern non-empty
// Kept kernels are numbered k = 0 .. nnz-1 in CSR order over output channels:
//   row_ptr      [cout + 1]          int32
//   chan_idx     [nnz]               int32, input channel within the group,
//                                    strictly increasing within a row
//   pattern_idx  [nnz]               int32, the kernel's pattern
//   value_ptr    [nnz + 1]           int32, kernel k's weights are
//                                    values[value_ptr[k] .. value_ptr[k+1]),
//                                    one per tap of its pattern, in tap order
//   value_tap    [nnz_values]        int32, the tap of each value
//   values       [nnz_values]        the kept weights, flat
// The transposed view lists, per input channel c (global: g * Cin/g + i),
// the kernels that read it, output channels ascending:
//   col_ptr      [cin + 1]           int32, offsets into kernel_idx
//   kernel_idx   [nnz]               int32, kernel ids ordered by column
//   kernel_row   [nnz]               int32, the output channel of each
#pragma once
#include <cstdint>

#include "conv_geometry.h"

namespace sparsekernels {

struct Patterns {
  const int32_t* pattern_ptr;
  const int32_t* pattern_taps;
  int64_t num_patterns;
  const int32_t* row_ptr;
  const int32_t* chan_idx;
  const int32_t* pattern_idx;
  int64_t nnz;  // kept kernels
  const int32_t* value_ptr;
  const int32_t* value_tap;
  int64_t nnz_values;  // kept weights
  const int32_t* col_ptr;
  const int32_t* kernel_idx;
  const int32_t* kernel_row;
};

}  // namespace sparsekernels
