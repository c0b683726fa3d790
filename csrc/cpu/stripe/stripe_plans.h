// Stripe-specific index helpers of the CPU stripe conv (the activation
// layouts it sweeps are those of cpu/common/wide_layout.h). Every pass is a
// set of dense GEMMs, one per (group, kernel position): the output channels
// that keep tap k read the same input shifted by tap k.
#pragma once
#include <algorithm>
#include <cstdint>

#include "cpu/common/wide_layout.h"
#include "sparsekernels/stripe.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace stripe_plan {

using namespace wide;

// Positions [lo, hi) of column col whose output channel (relative to the
// group's first) lies in [o_lo, o_hi).
inline void column_segment(const Stripes& st, int64_t col, int64_t o_first, int64_t o_lo,
                           int64_t o_hi, int64_t& lo, int64_t& hi) {
  const int32_t* b = st.stripe_row + st.tap_ptr[col];
  const int32_t* e = st.stripe_row + st.tap_ptr[col + 1];
  lo = std::lower_bound(b, e, int32_t(o_first + o_lo)) - st.stripe_row;
  hi = std::lower_bound(b, e, int32_t(o_first + o_hi)) - st.stripe_row;
}

}  // namespace stripe_plan
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
