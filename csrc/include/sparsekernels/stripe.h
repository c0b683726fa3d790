// The stripe-sparse weight as the kernels see it (the canonical, serialisable
// form lives in sparsekernels/formats/stripe.py, which validates it; the
// bindings check it again before any pointer below can reach a kernel).
//
// A stripe is one output channel's Cin/g input-channel weights at one kernel
// position (tap = kh * Kw + kw): W[o, :, kh, kw] (Meng et al., "Pruning Filter
// in Filter"). Stripes are numbered s = 0 .. nnz-1 in CSR order:
//   row_ptr    [cout + 1]             int32, CSR offsets over output channels
//   tap_idx    [nnz]                  int32, kernel position, strictly
//                                     increasing within a row
//   values     [nnz, cin_g]           stripe s's weights contiguous
// The transposed view lists, per column (group g, tap t) = g * taps + t, the
// stripes of that group at that kernel position, output channels ascending:
//   tap_ptr    [groups * taps + 1]    int32, offsets into stripe_idx
//   stripe_idx [nnz]                  int32, stripe ids ordered by column
//   stripe_row [nnz]                  int32, the output channel of each
#pragma once
#include <cstdint>

#include "conv_geometry.h"

namespace sparsekernels {

struct Stripes {
  const int32_t* row_ptr;
  const int32_t* tap_idx;
  int64_t nnz;
  const int32_t* tap_ptr;
  const int32_t* stripe_idx;
  const int32_t* stripe_row;
};

// Column of the transposed view for group g and kernel position tap.
SK_HOST_DEVICE int64_t stripe_column(const ConvGeometry& geo, int64_t g, int32_t tap) {
  return g * geo.taps() + tap;
}

}  // namespace sparsekernels
