// Weight plans of the CPU pattern conv, compiled once for the baseline target
// (the per-ISA kernels of pattern_impl.h call them).
//
// The activations are laid out as the stripe kernels lay them out
// (cpu/common/wide_layout.h: InputSource, WideGradOut, GradSource): one
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
#include <list>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cpu/common/wide_layout.h"
#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace pattern_plan {

// One kept weight as a sweep applies it: element offset within its group's
// planes (the bindings bound every plane layout to int32 offsets) and weight.
template <typename T>
struct Entry {
  int32_t off;
  T w;
};

template <typename T>
struct Plan {
  int64_t rows = 0;     // all rows (every group)
  int64_t cols = 0;     // columns per group
  int64_t block = 1;    // columns per block
  int64_t nblocks = 1;  // blocks per group
  // Entries of (row, block) at [ptr[i], ptr[i + 1]), i = (g * nblocks + b) *
  // rows_g + row within the group: block-major, as the sweeps run (for each
  // block, every row), so a sweep reads the plan front to back.
  std::vector<int64_t> ptr;
  std::vector<Entry<T>> ent;
  std::vector<int32_t> val;  // grad-weight: each entry's index in `values`

  int64_t index(int64_t row, int64_t b) const {
    const int64_t rows_g = rows / groups, g = row / rows_g;
    return (g * nblocks + b) * rows_g + row % rows_g;
  }
  int64_t begin(int64_t row, int64_t b) const { return ptr[index(row, b)]; }
  int64_t end(int64_t row, int64_t b) const { return ptr[index(row, b) + 1]; }
  int64_t groups = 1;
};

// Offsets within a group's planes must fit the int32 entries.
inline void check_offsets(int64_t planes, int64_t cs) {
  if (planes * cs >= (int64_t(1) << 31))
    throw std::invalid_argument(
        "pattern conv: an image group's planes exceed 2^31 elements (input too large for "
        "the CPU kernels)");
}

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

// Builds a plan from each(emit), which calls emit(row, col, kernel, tap
// offset of each value) for every kept kernel (twice: counting, then filling);
// entry offset col * cs + off[tap], weights values[v] (values null: 0, and
// the value indices are recorded instead, for grad-weight).
template <typename T, typename Each>
Plan<T> build_plan(int64_t rows, int64_t cols, int64_t groups, int64_t block, int64_t nblocks,
                   int64_t cs, const Patterns& p, const std::vector<int64_t>& off,
                   const T* values, Each&& each) {
  Plan<T> plan;
  plan.rows = rows, plan.cols = cols, plan.groups = groups, plan.block = block;
  plan.nblocks = nblocks;
  check_offsets(cols, cs);
  plan.ptr.assign(rows * nblocks + 1, 0);
  each([&](int64_t i, int64_t, int64_t j) {
    plan.ptr[i + 1] += p.value_ptr[j + 1] - p.value_ptr[j];
  });
  for (size_t i = 1; i < plan.ptr.size(); ++i) plan.ptr[i] += plan.ptr[i - 1];
  std::vector<int64_t> cursor(plan.ptr.begin(), plan.ptr.end() - 1);
  plan.ent.resize(p.nnz_values);
  if (!values) plan.val.resize(p.nnz_values);
  std::vector<int64_t> toff(off.begin(), off.end());
  each([&](int64_t i, int64_t col, int64_t j) {
    int64_t at = cursor[i];
    const int64_t base = col * cs;
    for (int64_t v = p.value_ptr[j]; v < p.value_ptr[j + 1]; ++v, ++at) {
      plan.ent[at] = {static_cast<int32_t>(base + toff[p.value_tap[v]]),
                      values ? values[v] : T(0)};
      if (!values) plan.val[at] = static_cast<int32_t>(v);
    }
    cursor[i] = at;
  });
  return plan;
}

// Forward / grad-weight plan: rows are output channels, columns the group's
// input channels; entry offset c * cs + off[tap]. values null: weights 0 and
// value indices recorded (grad-weight).
template <typename T>
Plan<T> forward_plan(const ConvGeometry& geo, const Patterns& p, const T* values, int64_t cs,
                     const std::vector<int64_t>& off, int64_t block, int64_t nblocks) {
  const int64_t cout_g = geo.cout_per_group();
  return build_plan<T>(geo.cout, geo.cin_per_group(), geo.groups, block, nblocks, cs, p, off,
                       values, [&](auto&& emit) {
    for (int64_t o = 0; o < geo.cout; ++o) {
      // index (g, b, o within the group) = gb0 + b * cout_g
      const int64_t g = o / cout_g, gb0 = g * nblocks * cout_g + o % cout_g;
      for (int64_t j = p.row_ptr[o]; j < p.row_ptr[o + 1]; ++j) {
        const int64_t c = p.chan_idx[j];
        emit(gb0 + c / block * cout_g, c, j);
      }
    }
  });
}

// Grad-input plan: rows are input channels (the transposed view), columns
// the group's output channels; entry offset o * cs + off[tap] (off of the
// GradSource, which already flips the kernel).
template <typename T>
Plan<T> grad_input_plan(const ConvGeometry& geo, const Patterns& p, const T* values,
                        int64_t cs, const std::vector<int64_t>& off, int64_t block,
                        int64_t nblocks) {
  const int64_t cout_g = geo.cout_per_group(), cin_g = geo.cin_per_group();
  return build_plan<T>(geo.cin, cout_g, geo.groups, block, nblocks, cs, p, off, values,
                       [&](auto&& emit) {
    for (int64_t c = 0; c < geo.cin; ++c) {
      const int64_t g = c / cin_g, gb0 = g * nblocks * cin_g + c % cin_g;
      for (int64_t t = p.col_ptr[c]; t < p.col_ptr[c + 1]; ++t) {
        const int64_t o = p.kernel_row[t] - g * cout_g;
        emit(gb0 + o / block * cin_g, o, p.kernel_idx[t]);
      }
    }
  });
}

// Which weight plan a cached index plan is: the forward's / grad-weight's
// (rows output channels, forward_plan) or grad-input's (rows input channels,
// grad_input_plan).
enum class PlanKind : int { kForward = 0, kGradInput = 1 };

// A weight plan without weights (entry weights 0, `val` = each entry's index
// in `values`), cached per validated topology: `topology_id` comes from the
// bindings' topology cache (python_bindings/pattern.cpp), which hands out a
// fresh id for every topology contents it has checked in full and never
// reuses one, so equal ids mean equal (valid) index tensors and the plan's
// offsets can be reused; everything else the offsets depend on (the plan
// kind, Cout, Cin, groups, the plane stride cs, the tap offsets, the
// blocking) is in the key. The forward and grad-input gather their weights
// per call (with_weights); grad-weight reads `val` as is.
// Bounded (kPlanCacheSize plans, least recently used dropped), mutex-guarded.
template <typename T>
std::shared_ptr<const Plan<T>> cached_index_plan(uint64_t topology_id, const ConvGeometry& geo,
                                                 const Patterns& p, int64_t cs,
                                                 const std::vector<int64_t>& off,
                                                 int64_t block, int64_t nblocks,
                                                 PlanKind kind = PlanKind::kForward) {
  struct Item {
    uint64_t id;
    PlanKind kind;
    int64_t cout, cin, groups, cs, block, nblocks;
    std::vector<int64_t> off;
    std::shared_ptr<const Plan<T>> plan;
  };
  constexpr size_t kPlanCacheSize = 16;
  static std::mutex mutex;
  static std::list<Item> items;  // most recently used first
  auto match = [&](const Item& it) {
    return it.id == topology_id && it.kind == kind && it.cout == geo.cout &&
           it.cin == geo.cin && it.groups == geo.groups && it.cs == cs && it.block == block &&
           it.nblocks == nblocks && it.off == off;
  };
  {
    std::lock_guard<std::mutex> lock(mutex);
    for (auto it = items.begin(); it != items.end(); ++it)
      if (match(*it)) {
        items.splice(items.begin(), items, it);
        return it->plan;
      }
  }
  const T* none = nullptr;
  auto plan = std::make_shared<const Plan<T>>(
      kind == PlanKind::kGradInput ? grad_input_plan<T>(geo, p, none, cs, off, block, nblocks)
                                   : forward_plan<T>(geo, p, none, cs, off, block, nblocks));
  std::lock_guard<std::mutex> lock(mutex);
  items.push_front(Item{topology_id, kind, geo.cout, geo.cin, geo.groups, cs, block, nblocks,
                        off, plan});
  if (items.size() > kPlanCacheSize) items.pop_back();
  return plan;
}

// The plan `index_plan` with each entry's weight values[val[e]].
template <typename T>
Plan<T> with_weights(const Plan<T>& index_plan, const T* values) {
  Plan<T> plan;
  plan.rows = index_plan.rows, plan.cols = index_plan.cols, plan.groups = index_plan.groups;
  plan.block = index_plan.block, plan.nblocks = index_plan.nblocks;
  plan.ptr = index_plan.ptr;
  const int64_t n = static_cast<int64_t>(index_plan.ent.size());
  plan.ent.resize(n);
  const Entry<T>* src = index_plan.ent.data();
  const int32_t* val = index_plan.val.data();
  Entry<T>* dst = plan.ent.data();
  for (int64_t e = 0; e < n; ++e) dst[e] = {src[e].off, values[val[e]]};
  return plan;
}

}  // namespace pattern_plan
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
