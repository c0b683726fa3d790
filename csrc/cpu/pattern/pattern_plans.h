// Weight plans of the CPU pattern conv, compiled once for the baseline target
// (the per-ISA kernels of pattern_impl.h call them). Plans hold indices only
// (offsets into the activation layouts, indices into `values`): the kernels
// read the weights where the format keeps them, so a plan is built once per
// validated topology and reused while the weights train.
//
// The activations are laid out as the stripe kernels lay them out
// (cpu/common/wide_layout.h: InputSource, WideGradOut, GradSource): one
// "wide" plane per channel, in which every tap of the kernel is a constant
// offset off[tap] from an output pixel, so a kept weight (row r, column c,
// tap t) multiplies a contiguous run of pixels at element offset
// c * cs + off[t].
//
// The kernels of a block of rows that read the same column through the same
// pattern read the same input vectors. Each such set is a TapGroup of the
// GroupedPlan: the forward and grad-input sweeps load the group's taps once
// per pixel tile and apply them to every member row, whose partial sums stay
// near the core (choose_row_blocks sizes the row block); grad-weight loads them once per
// pixel vector for a tile of member rows. A pattern of more than kGroupTaps
// taps is split into near-equal chunks, one group each.
#pragma once
#include <algorithm>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "cpu/common/bounded_lru.h"
#include "cpu/common/wide_layout.h"
#include "sparsekernels/pattern.h"

namespace sparsekernels {
namespace cpu {
namespace detail {
namespace pattern_plan {

// Offsets within a group's planes must fit the int32 offsets of the plans.
inline void check_offsets(int64_t planes, int64_t cs) {
  if (planes * cs >= (int64_t(1) << 31))
    throw std::invalid_argument(
        "pattern conv: an image group's planes exceed 2^31 elements (input too large for "
        "the CPU kernels)");
}

// ---------------------------------------------------------------------------
// Grouped plan (forward, grad-input)
// ---------------------------------------------------------------------------

// Most taps one group applies: the sweep holds kGroupTaps x its pixel vectors
// of input in registers (pattern_impl.h, kGroupVectors).
constexpr int kGroupTaps = 4;

struct TapGroup {
  int32_t off[kGroupTaps];  // element offset of each tap's input: column * cs + off[tap]
  int32_t ntaps;
  int32_t nmembers;
  int32_t col;    // the column it reads
  int64_t first;  // its members are mem[first .. first + nmembers)
};

// A member row of a group: its row within the row block, and the index in
// `values` of its weight at the group's first tap (a kernel's weights are
// consecutive, in tap order).
struct Member {
  int32_t row;
  int32_t value;
};

struct GroupedPlan {
  int64_t rows = 0;       // all rows (every conv group)
  int64_t groups = 1;     // conv groups
  int64_t row_block = 1;  // rows per block (the last block may be shorter)
  int64_t nrb = 1;        // row blocks per conv group
  // Groups of (conv group g, row block b) at [gptr[i], gptr[i + 1]), i =
  // g * nrb + b, ordered by column, then pattern.
  std::vector<int64_t> gptr;
  std::vector<TapGroup> grp;
  std::vector<Member> mem;

  int64_t rows_per_group() const { return rows / groups; }
  size_t bytes() const {
    return gptr.size() * sizeof(int64_t) + grp.size() * sizeof(TapGroup) +
           mem.size() * sizeof(Member);
  }
  int64_t block_begin(int64_t b) const { return b * row_block; }
  int64_t block_rows(int64_t b) const {
    return std::min(row_block, rows_per_group() - b * row_block);
  }
};

// Fraction of the (output channel, input channel) kernels of the conv kept.
inline double kept_density(const ConvGeometry& geo, const Patterns& p) {
  return double(p.nnz) / std::max<double>(1.0, double(geo.cout) * geo.cin_per_group());
}

// Rows per block of the forward / grad-input sweeps: enough for groups of
// about `members` member rows on average (a row keeps `density` of the
// (row, column) kernels, spread over the library's `patterns`), with the
// block's partial sums (rows x `tile` elements) between `lo` and `hi`
// bytes; near-equal blocks. More members share a group's input loads; fewer
// rows keep the partial sums nearer the core.
inline void choose_row_blocks(int64_t rows_g, int64_t tile, int64_t elem, double density,
                              int64_t patterns, int members, int64_t lo, int64_t hi,
                              int64_t& row_block, int64_t& nrb) {
  const double want = members * double(patterns) / std::max(density, 1e-9);
  const int64_t bytes = tile * elem;
  const int64_t most = std::clamp<int64_t>(int64_t(std::min(want, 1e9)), lo / bytes,
                                           std::max<int64_t>(1, hi / bytes));
  nrb = std::max<int64_t>(1, (rows_g + most - 1) / most);
  row_block = std::max<int64_t>(1, (rows_g + nrb - 1) / nrb);
  nrb = std::max<int64_t>(1, (rows_g + row_block - 1) / row_block);
}

// Builds a grouped plan from each(emit), which calls emit(row, col, kernel)
// for every kept kernel, rows ascending; a kernel's taps read column col at
// col * cs + off[tap].
template <typename Each>
GroupedPlan build_grouped(int64_t rows, int64_t cols, int64_t groups, int64_t row_block,
                          int64_t nrb, int64_t cs, const Patterns& p,
                          const std::vector<int64_t>& off, Each&& each) {
  check_offsets(cols, cs);
  GroupedPlan plan;
  plan.rows = rows, plan.groups = groups, plan.row_block = row_block, plan.nrb = nrb;
  struct Kept {
    int32_t row, col, kernel;
  };
  std::vector<Kept> kept;
  kept.reserve(p.nnz);
  each([&](int64_t row, int64_t col, int64_t j) {
    kept.push_back({int32_t(row), int32_t(col), int32_t(j)});
  });
  const int64_t P = p.num_patterns, rows_g = rows / groups;
  // Counting sort of each block's kernels by (column, pattern), rows kept
  // ascending within a key.
  std::vector<int64_t> start(cols * P + 1);
  std::vector<int32_t> order;
  plan.gptr.assign(groups * nrb + 1, 0);
  size_t k0 = 0;
  for (int64_t g = 0; g < groups; ++g)
    for (int64_t b = 0; b < nrb; ++b) {
      const int64_t r0 = g * rows_g + plan.block_begin(b), r1 = r0 + plan.block_rows(b);
      size_t k1 = k0;
      while (k1 < kept.size() && kept[k1].row < r1) ++k1;
      std::fill(start.begin(), start.end(), 0);
      auto key = [&](const Kept& k) { return k.col * P + p.pattern_idx[k.kernel]; };
      for (size_t k = k0; k < k1; ++k) ++start[key(kept[k]) + 1];
      for (size_t i = 1; i < start.size(); ++i) start[i] += start[i - 1];
      order.assign(k1 - k0, 0);
      for (size_t k = k0; k < k1; ++k) order[start[key(kept[k])]++] = int32_t(k);
      // start[key] now ends key's run.
      int64_t at = 0;
      for (int64_t kk = 0; kk < cols * P; ++kk) {
        const int64_t end = start[kk];
        if (at == end) continue;
        const int64_t col = kk / P, q = kk % P;
        const int32_t* taps = p.pattern_taps + p.pattern_ptr[q];
        const int64_t n = p.pattern_ptr[q + 1] - p.pattern_ptr[q];
        const int64_t nch = (n + kGroupTaps - 1) / kGroupTaps;
        for (int64_t h = 0; h < nch; ++h) {
          const int64_t a = n * h / nch, e = n * (h + 1) / nch;
          TapGroup gr{};
          for (int64_t t = a; t < e; ++t) gr.off[t - a] = int32_t(col * cs + off[taps[t]]);
          gr.ntaps = int32_t(e - a);
          gr.nmembers = int32_t(end - at);
          gr.col = int32_t(col);
          gr.first = int64_t(plan.mem.size());
          for (int64_t i = at; i < end; ++i) {
            const Kept& k = kept[order[i]];
            plan.mem.push_back({int32_t(k.row - r0), int32_t(p.value_ptr[k.kernel] + a)});
          }
          plan.grp.push_back(gr);
        }
        at = end;
      }
      plan.gptr[g * nrb + b + 1] = int64_t(plan.grp.size());
      k0 = k1;
    }
  return plan;
}

// Forward: rows are output channels, columns the group's input channels.
inline GroupedPlan forward_grouped(const ConvGeometry& geo, const Patterns& p, int64_t cs,
                                   const std::vector<int64_t>& off, int64_t row_block,
                                   int64_t nrb) {
  return build_grouped(geo.cout, geo.cin_per_group(), geo.groups, row_block, nrb, cs, p, off,
                       [&](auto&& emit) {
    for (int64_t o = 0; o < geo.cout; ++o)
      for (int64_t j = p.row_ptr[o]; j < p.row_ptr[o + 1]; ++j) emit(o, p.chan_idx[j], j);
  });
}

// Grad-input: rows are input channels (the transposed view), columns the
// group's output channels; `off` is the GradSource's (the kernel flipped).
inline GroupedPlan grad_input_grouped(const ConvGeometry& geo, const Patterns& p, int64_t cs,
                                      const std::vector<int64_t>& off, int64_t row_block,
                                      int64_t nrb) {
  const int64_t cout_g = geo.cout_per_group(), cin_g = geo.cin_per_group();
  return build_grouped(geo.cin, cout_g, geo.groups, row_block, nrb, cs, p, off,
                       [&](auto&& emit) {
    for (int64_t c = 0; c < geo.cin; ++c) {
      const int64_t g = c / cin_g;
      for (int64_t t = p.col_ptr[c]; t < p.col_ptr[c + 1]; ++t)
        emit(c, p.kernel_row[t] - g * cout_g, p.kernel_idx[t]);
    }
  });
}

// ---------------------------------------------------------------------------
// Plan cache
// ---------------------------------------------------------------------------

// Which pass's groups a plan holds (forward_grouped: also grad-weight's).
enum class PlanKind : int { kForward, kGradInput };

// What a plan's offsets depend on besides the topology: the pass, the
// geometry's channel counts, the plane stride cs, the row blocking and the
// tap offsets.
struct PlanKey {
  uint64_t topology_id;
  PlanKind kind;
  int64_t cout, cin, groups, cs, row_block, nrb;
  std::vector<int64_t> off;
  bool operator==(const PlanKey& o) const {
    return topology_id == o.topology_id && kind == o.kind && cout == o.cout && cin == o.cin &&
           groups == o.groups && cs == o.cs && row_block == o.row_block && nrb == o.nrb &&
           off == o.off;
  }
};

// The plan build() makes, cached per validated topology: `topology_id` comes
// from the bindings' topology cache (python_bindings/pattern.cpp), which
// hands out a fresh id for every topology contents it has checked in full
// and never reuses one, so equal keys mean equal (valid) index tensors and
// equal offsets. topology_id 0 (not validated under an id): built for this
// call. Bounded as the bindings' topology cache is (1024 plans, 512 MiB:
// a network's every layer), mutex-guarded.
template <typename Build>
std::shared_ptr<const GroupedPlan> plan_for(uint64_t topology_id, PlanKind kind,
                                            const ConvGeometry& geo, int64_t cs,
                                            int64_t row_block, int64_t nrb,
                                            const std::vector<int64_t>& off, Build&& build) {
  if (!topology_id) return std::make_shared<const GroupedPlan>(build());
  const PlanKey key{topology_id, kind, geo.cout, geo.cin, geo.groups, cs, row_block, nrb, off};
  using Item = std::pair<PlanKey, std::shared_ptr<const GroupedPlan>>;
  static std::mutex mutex;
  static BoundedLru<Item> items(1024, size_t(512) << 20);
  {
    std::lock_guard<std::mutex> lock(mutex);
    if (const Item* hit = items.find([&](const Item& it) { return it.first == key; }))
      return hit->second;
  }
  auto plan = std::make_shared<const GroupedPlan>(build());
  std::lock_guard<std::mutex> lock(mutex);
  items.insert({key, plan}, plan->bytes());
  return plan;
}

}  // namespace pattern_plan
}  // namespace detail
}  // namespace cpu
}  // namespace sparsekernels
