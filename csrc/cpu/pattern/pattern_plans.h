// Weight plans of the CPU pattern conv, compiled once for the baseline target
// (the per-ISA kernels of pattern_impl.h call them).
//
// The activations are laid out as the stripe kernels lay them out
// (cpu/stripe/stripe_plans.h: InputSource, WideGradOut, GradSource): one
// "wide" plane per channel, in which every tap of the kernel is a constant
// offset off[tap] from an output pixel, so a kept weight (row r, column c,
// tap t) is one (element offset c * cs + off[t], weight) pair applied to a
// contiguous run of pixels. A plan lists, per row (output channel for the
// forward and grad-weight, input channel for grad-input) and per block of
// columns, those pairs in the format's order; the kernels sweep a pixel tile
// of the blocks' planes (L1-sized) with every row's pairs of that block.
#pragma once
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "cpu/stripe/stripe_plans.h"
#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace pattern_plan {

template <typename T>
struct Plan {
  int64_t rows = 0;     // all rows (every group)
  int64_t cols = 0;     // columns per group
  int64_t block = 1;    // columns per block
  int64_t nblocks = 1;  // blocks per group
  std::vector<int64_t> ptr;  // [rows * nblocks + 1]: entries of (row, block)
  std::vector<int64_t> off;  // element offset of the entry within its group's planes
  std::vector<T> w;          // its weight
  std::vector<int32_t> val;  // its index in `values`

  int64_t begin(int64_t row, int64_t b) const { return ptr[row * nblocks + b]; }
  int64_t end(int64_t row, int64_t b) const { return ptr[row * nblocks + b + 1]; }
};

// Columns per block: `budget` bytes of `col_rows` planes of tile + span
// elements each, blocks of near-equal size.
inline void choose_blocks(int64_t cols, int64_t col_rows, int64_t tile, int64_t span,
                          int64_t elem, int64_t budget, int64_t& block, int64_t& nblocks) {
  const int64_t per_col = std::max<int64_t>(1, col_rows * (tile + span) * elem);
  const int64_t most = std::max<int64_t>(1, budget / per_col);
  nblocks = std::max<int64_t>(1, (cols + most - 1) / most);
  block = (cols + nblocks - 1) / nblocks;
  nblocks = (cols + block - 1) / block;
}

// Forward / grad-weight plan: rows are output channels, columns the group's
// input channels; entry offset c * cs + off[tap].
template <typename T>
Plan<T> forward_plan(const ConvGeometry& geo, const Patterns& p, const T* values, int64_t cs,
                     const std::vector<int64_t>& off, int64_t block, int64_t nblocks) {
  Plan<T> plan;
  plan.rows = geo.cout, plan.cols = geo.cin_per_group(), plan.block = block;
  plan.nblocks = nblocks;
  plan.ptr.assign(plan.rows * nblocks + 1, 0);
  plan.off.reserve(p.nnz_values), plan.val.reserve(p.nnz_values);
  if (values) plan.w.reserve(p.nnz_values);
  for (int64_t o = 0; o < geo.cout; ++o) {
    for (int64_t j = p.row_ptr[o]; j < p.row_ptr[o + 1]; ++j) {
      const int64_t c = p.chan_idx[j];
      plan.ptr[o * nblocks + c / block + 1] += p.value_ptr[j + 1] - p.value_ptr[j];
      for (int64_t v = p.value_ptr[j]; v < p.value_ptr[j + 1]; ++v) {
        plan.off.push_back(c * cs + off[p.value_tap[v]]);
        plan.val.push_back(static_cast<int32_t>(v));
        if (values) plan.w.push_back(values[v]);
      }
    }
  }
  for (size_t i = 1; i < plan.ptr.size(); ++i) plan.ptr[i] += plan.ptr[i - 1];
  return plan;
}

// Grad-input plan: rows are input channels (the transposed view), columns
// the group's output channels; entry offset o * cs + off[tap] (off of the
// GradSource, which already flips the kernel).
template <typename T>
Plan<T> grad_input_plan(const ConvGeometry& geo, const Patterns& p, const T* values,
                        int64_t cs, const std::vector<int64_t>& off, int64_t block,
                        int64_t nblocks) {
  Plan<T> plan;
  const int64_t cout_g = geo.cout_per_group(), cin_g = geo.cin_per_group();
  plan.rows = geo.cin, plan.cols = cout_g, plan.block = block, plan.nblocks = nblocks;
  plan.ptr.assign(plan.rows * nblocks + 1, 0);
  plan.off.reserve(p.nnz_values), plan.w.reserve(p.nnz_values);
  for (int64_t c = 0; c < geo.cin; ++c) {
    const int64_t g = c / cin_g;
    for (int64_t t = p.col_ptr[c]; t < p.col_ptr[c + 1]; ++t) {
      const int64_t j = p.kernel_idx[t], o = p.kernel_row[t] - g * cout_g;
      plan.ptr[c * nblocks + o / block + 1] += p.value_ptr[j + 1] - p.value_ptr[j];
      for (int64_t v = p.value_ptr[j]; v < p.value_ptr[j + 1]; ++v) {
        plan.off.push_back(o * cs + off[p.value_tap[v]]);
        plan.w.push_back(values[v]);
      }
    }
  }
  for (size_t i = 1; i < plan.ptr.size(); ++i) plan.ptr[i] += plan.ptr[i - 1];
  return plan;
}

}  // namespace pattern_plan
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
