// Kernel bodies of the CPU pattern conv, written once over a GCC vector type.
// pattern_cpu.cpp has cpu/common/for_each_isa.inc include this file once per
// instruction set (deliberately no include guard), in its own namespace and
// `#pragma GCC target` region, after the SIMD primitives of cpu/common/simd.h;
// the std headers, cpu/common/conv_layout.h and pattern_plans.h are included
// before.
//
// The activations are in the wide layouts of cpu/common/wide_layout.h (every
// tap a constant offset); the plans of pattern_plans.h hold indices only, and
// the kernels read the weights from `values`.
//   forward      items (group, pixel chunk, block of output channels): the
//                block's partial sums (rows x chunk, 64-128 KiB) start at the
//                bias; for each input channel and pattern, the kernels of the
//                block that read that channel through that pattern (a
//                TapGroup) share its taps' input vectors, loaded into
//                registers once per register tile; each member then takes
//                one broadcast and kGroupVectors FMAs per tap, with one load
//                and one store of its partial sums per tile. The chunk is
//                then stored to NCHW (wide pixels that are not real dropped).
//   grad-input   the same sweep over grad_out dilated by the stride and
//                zero-padded (GradSource: the kernel flipped into the tap
//                offsets), rows = input channels through the transposed view.
//   grad-weight  the forward's groups again, per (group, block of output
//                channels) item: for a tile of up to kGwMembers member rows,
//                dW[o, c, tap] = sum over wide pixels q of G[o, q] X[c, q +
//                off[tap]] (G zero at wide pixels that are not real), the
//                group's K shifted input vectors loaded once per pixel vector
//                for all members (wide_dot_tile), summed lane-wise over a
//                pixel chunk and reduced once per chunk. An item is one
//                thread's alone: no cross-thread reduction, and the summation
//                order does not depend on the thread count.

// Forward and grad-input: pixel vectors per register tile. A group's
// kGroupTaps x kGroupVectors input vectors, a member's kGroupVectors partial
// sums and a broadcast weight fit the ISA's vector registers (AVX2: 4 x 3 +
// 3 + 1 = 16; with 2 vectors a member's loads, broadcasts and stores of its
// partial sums were 8 per 8 FMAs, now 10 per 12).
constexpr int kGroupVectors = kVecRegs >= 32 ? 4 : 3;
// Elements per pixel chunk of the forward / grad-input sweep (a whole number
// of register tiles on every ISA and type: 96 = 4 AVX2 tiles of 24 floats).
constexpr int64_t kChunk = kVecRegs >= 32 ? 128 : 96;
static_assert(kChunk % (kGroupVectors * kVecBytes / 4) == 0, "a chunk is whole register tiles");
// A row block's partial sums (rows x chunk): its size in bytes, at least
// and at most (the block is the smallest in that range whose groups have
// kGroupMembers members on average). Measured on the ResNet-50 3x3 layers:
// the larger bound is faster with few kernels kept (256 rows at 14x14, 75%
// dropped: 1.35 against 1.50 ms) and slower with many (512 rows at 7x7,
// none dropped: 6.7 against 6.3 ms).
constexpr int64_t kPartialLeast = 64 << 10, kPartialMost = 128 << 10;
constexpr int kGroupMembers = 8;

// The group's K taps applied to each member over a chunk of the pixels:
// y[row] [0 .. kChunk) += sum_k values[value + k] * x[off[k] + 0 .. kChunk),
// the inputs of a register tile loaded once for every member.
template <typename T, int K>
inline void group_chunk(const T* x, const pattern_plan::TapGroup& gr,
                        const pattern_plan::Member* mem, const T* values, T* y) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  constexpr int TV = kGroupVectors;
  for (int64_t s = 0; s < kChunk; s += TV * L) {
    V in[K][TV];
    for (int k = 0; k < K; ++k)
      for (int v = 0; v < TV; ++v) in[k][v] = vload<V>(x + gr.off[k] + s + v * L);
    for (int32_t m = 0; m < gr.nmembers; ++m) {
      T* yr = y + int64_t(mem[m].row) * kChunk + s;
      const T* w = values + mem[m].value;
      V acc[TV];
      for (int v = 0; v < TV; ++v) acc[v] = vload<V>(yr + v * L);
      for (int k = 0; k < K; ++k) {
        const V b = vbcast<V>(w[k]);
        for (int v = 0; v < TV; ++v) acc[v] = vfma(b, in[k][v], acc[v]);
      }
      for (int v = 0; v < TV; ++v) vstore(yr + v * L, acc[v]);
    }
  }
}

// One conv as grouped sweeps over a wide source (forward: InputSource,
// grad-input: GradSource). Items are (conv group, pixel chunk, row block):
// the block's partial sums start at the bias, take every group of the block
// and are stored (row `row` of image b to out[(b * plan.rows + row) *
// out_hw ...]). Row blocks vary fastest: they share the chunk's input, in L2.
template <typename T, typename Source>
void grouped_sweep(const ConvGeometry& geo, const pattern_plan::GroupedPlan& plan, int64_t cols,
                   Source& src, const T* act, Strides4 s, const T* values, const T* bias,
                   const OutputClamp& clamp, T* out, int64_t out_hw, int num_threads) {
  using namespace wide;
  using V = typename Vec<T>::type;
  const int64_t G = geo.groups, rows_g = plan.rows_per_group(), nrb = plan.nrb;
  const int64_t cs = src.cs;
  // The lines a chunk's taps read of one column (element offsets from the
  // column's start, a line apart): a group prefetches the next column's when
  // it is the first of its column, since the columns' planes lie cs apart and
  // the hardware prefetchers do not follow.
  std::vector<int64_t> ahead;
  {
    std::vector<int64_t> off = src.off;
    std::sort(off.begin(), off.end());
    constexpr int64_t line = 64 / sizeof(T);
    int64_t covered = off.front();
    // The union of [o, o + kChunk + line): a chunk may start mid-line.
    for (const int64_t o : off) {
      for (int64_t e = std::max(o, covered); e < o + kChunk + line; e += line) ahead.push_back(e);
      covered = std::max(covered, o + kChunk + line);
    }
  }
#pragma omp parallel num_threads(num_threads)
  {
    T* const y = scratch_array<T>(kTileSlot, plan.row_block * kChunk);
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(act, s, b0, nb);
      const Wide wide = src.layout(nb);
      const int64_t nchunks = wide.npix / kChunk;
#pragma omp for schedule(static)
      for (int64_t item = 0; item < G * nchunks * nrb; ++item) {
        const int64_t g = item / (nchunks * nrb), q0 = item / nrb % nchunks * kChunk;
        const int64_t rb = item % nrb, first = g * rows_g + plan.block_begin(rb);
        const int64_t nr = plan.block_rows(rb);
        for (int64_t r = 0; r < nr; ++r)
          std::fill(y + r * kChunk, y + (r + 1) * kChunk, bias ? bias[first + r] : T(0));
        const T* x = src.buf + g * cols * cs + q0;
        const int64_t i = g * nrb + rb;
        int32_t fetched = -1;  // the column whose next one was prefetched
        for (int64_t gi = plan.gptr[i]; gi < plan.gptr[i + 1]; ++gi) {
          const pattern_plan::TapGroup& gr = plan.grp[gi];
          if (gr.col != fetched && gr.col + 1 < cols) {
            fetched = gr.col;
            for (const int64_t e : ahead) __builtin_prefetch(x + (gr.col + 1) * cs + e);
          }
          const pattern_plan::Member* mem = plan.mem.data() + gr.first;
          with_count<pattern_plan::kGroupTaps>(gr.ntaps, [&](auto k) {
            group_chunk<T, decltype(k)::value>(x, gr, mem, values, y);
          });
        }
        for (int64_t r = 0; r < nr; ++r) {
          T* yr = y + r * kChunk;
          if (clamp.active())  // whole vectors (clamp_row's scalar tail is dead here)
            for (int64_t q = 0; q < kChunk; q += lanes<T>())
              vstore(yr + q, vclamp(vload<V>(yr + q), T(clamp.lo), T(clamp.hi)));
          wide.store(yr, q0, kChunk, out + (b0 * plan.rows + first + r) * out_hw,
                     plan.rows * out_hw);
        }
      }
    }
  }
}

// The grouped plan of the forward or grad-input sweep over `src`: its rows
// (output channels, input channels) in blocks sized by choose_row_blocks.
template <typename T, typename Source>
std::shared_ptr<const pattern_plan::GroupedPlan> sweep_plan(
    const ConvGeometry& geo, const Patterns& p, uint64_t topology_id,
    pattern_plan::PlanKind kind, const Source& src) {
  using namespace pattern_plan;
  const bool fwd = kind == PlanKind::kForward;
  int64_t row_block, nrb;
  choose_row_blocks(fwd ? geo.cout_per_group() : geo.cin_per_group(), kChunk, sizeof(T),
                    kept_density(geo, p), p.num_patterns, kGroupMembers, kPartialLeast,
                    kPartialMost, row_block, nrb);
  return plan_for(topology_id, kind, geo, src.cs, row_block, nrb, src.off, [&] {
    return fwd ? forward_grouped(geo, p, src.cs, src.off, row_block, nrb)
               : grad_input_grouped(geo, p, src.cs, src.off, row_block, nrb);
  });
}

template <typename T>
void forward(const ConvGeometry& geo, const Patterns& p, const T* values, const T* input,
             Strides4 in_s, const T* bias, const OutputClamp& clamp, T* output, int num_threads,
             uint64_t topology_id) {
  using namespace wide;
  using namespace pattern_plan;
  const int64_t ohw = geo.out_h * geo.out_w;
  if (geo.batch == 0) return;
  num_threads = std::max(num_threads, 1);
  if (p.nnz == 0) {  // fully pruned: bias or 0
    const int64_t planes = geo.batch * geo.cout;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < planes; ++i)
      std::fill(output + i * ohw, output + (i + 1) * ohw,
                clamp(bias ? bias[i % geo.cout] : T(0)));
    return;
  }
  InputSource<T> src(geo, kChunk);
  const auto plan = sweep_plan<T>(geo, p, topology_id, PlanKind::kForward, src);
  grouped_sweep<T>(geo, *plan, geo.cin_per_group(), src, input, in_s, values, bias, clamp,
                   output, ohw, num_threads);
}

template <typename T>
void grad_input(const ConvGeometry& geo, const Patterns& p, const T* values, const T* grad_out,
                Strides4 go_s, T* grad_input, int num_threads, uint64_t topology_id) {
  using namespace wide;
  using namespace pattern_plan;
  const int64_t hw = geo.in_h * geo.in_w;
  if (geo.batch == 0) return;
  num_threads = std::max(num_threads, 1);
  if (p.nnz == 0) {
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < geo.batch * geo.cin; ++i)
      std::fill(grad_input + i * hw, grad_input + (i + 1) * hw, T(0));
    return;
  }
  GradSource<T> src(geo, kChunk);
  const auto plan = sweep_plan<T>(geo, p, topology_id, PlanKind::kGradInput, src);
  grouped_sweep<T>(geo, *plan, geo.cout_per_group(), src, grad_out, go_s, values, nullptr,
                   OutputClamp{}, grad_input, hw, num_threads);
}

// Grad-weight: most members per register tile, a group's K taps x
// kGwMembers accumulators (wide_dot_tile: the shorter side's vectors held,
// the other's streamed); a group's members split into near-equal tiles.
// AVX2 and SSE: 3 members x up to 4 taps, 12 accumulators in 16 registers.
constexpr int kGwMembers = kVecRegs >= 32 ? 6 : 3;
// Most rows per grad-weight row block; the bytes of a block's grad_out rows
// over a pixel chunk, which the block's groups re-read (in L2); the most
// pixels per chunk (a tile's lane sums are reduced once per chunk).
constexpr int64_t kGwRows = 64;
constexpr int64_t kGwBudget = 512 << 10;
constexpr int64_t kGwChunkMost = 2048;

template <typename T>
void grad_weight(const ConvGeometry& geo, const Patterns& p, const T* input, Strides4 in_s,
                 const T* grad_out, Strides4 go_s, T* grad_values, int num_threads,
                 uint64_t topology_id) {
  using namespace wide;
  using namespace pattern_plan;
  std::fill(grad_values, grad_values + p.nnz_values, T(0));
  if (geo.batch == 0 || p.nnz_values == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t G = geo.groups, cin_g = geo.cin_per_group(), rows_g = geo.cout_per_group();

  InputSource<T> src(geo, kChunk);
  WideGradOut<T> gout(geo, src.wide, src.group);
  // Row blocks (the items, each a thread's alone: no cross-thread
  // reduction): one per thread at least, at most kGwRows rows. A weight's sum
  // runs over the pixel chunks in order whatever the blocks, so the result
  // does not depend on the thread count.
  const int64_t nrb0 = std::max((num_threads + G - 1) / G, (rows_g + kGwRows - 1) / kGwRows);
  const int64_t row_block = (rows_g + std::min(nrb0, rows_g) - 1) / std::min(nrb0, rows_g);
  const int64_t nrb = (rows_g + row_block - 1) / row_block;
  const int64_t chunk = std::clamp<int64_t>(
      kGwBudget / (row_block * int64_t(sizeof(T))) / kChunk * kChunk, kChunk, kGwChunkMost);
  const auto plan =
      plan_for(topology_id, PlanKind::kForward, geo, src.cs, row_block, nrb, src.off,
               [&] { return forward_grouped(geo, p, src.cs, src.off, row_block, nrb); });
  const int64_t cs = src.cs;

  // Unmasked first. A non-finite result means a non-finite input or
  // grad_out, and maybe products the conv never forms (RealLanes): then
  // again with those lanes cleared. Finite results cost one scan of them.
  for (const bool nonfinite : {false, true}) {
    if (nonfinite) {
      if (!any_nonfinite(grad_values, p.nnz_values)) break;
      std::fill(grad_values, grad_values + p.nnz_values, T(0));
    }
#pragma omp parallel num_threads(num_threads)
    {
      RealLanes<T> lanes_real;
      for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
        const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
        src.build(input, in_s, b0, nb);
        const Wide wide = src.layout(nb);
        gout.build(grad_out, go_s, b0, wide);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < G * nrb; ++item) {
          const int64_t g = item / nrb, rb = item % nrb;
          const int64_t first = g * rows_g + plan->block_begin(rb), i = g * nrb + rb;
          const T* x_g = src.buf + g * cin_g * cs;
          for (int64_t q0 = 0; q0 < wide.npix; q0 += chunk) {
            const int64_t nq = std::min(chunk, wide.npix - q0);
            const RealLanes<T>* real = nullptr;
            if (nonfinite) lanes_real.build(wide, q0, q0 + nq), real = &lanes_real;
            for (int64_t gi = plan->gptr[i]; gi < plan->gptr[i + 1]; ++gi) {
              const TapGroup& gr = plan->grp[gi];
              const T* x[kGroupTaps];
              for (int k = 0; k < gr.ntaps; ++k) x[k] = x_g + gr.off[k] + q0;
              const int64_t ntiles = num_tiles(0, gr.nmembers, kGwMembers);
              for (int64_t t = 0; t < ntiles; ++t) {
                const int64_t m0 = tile_start(0, gr.nmembers, ntiles, t);
                const Member* mem = plan->mem.data() + gr.first + m0;
                const int nm = static_cast<int>(tile_start(0, gr.nmembers, ntiles, t + 1) - m0);
                const T* gq[kGwMembers];
                for (int m = 0; m < nm; ++m) gq[m] = gout.buf + (first + mem[m].row) * gout.cs + q0;
                with_count<kGwMembers>(nm, [&](auto M) {
                  with_count<kGroupTaps>(gr.ntaps, [&](auto K) {
                    wide_dot_tile<T, decltype(M)::value, decltype(K)::value>(
                        gq, x, nq, real,
                        [&](int m, int k) -> T& { return grad_values[mem[m].value + k]; });
                  });
                });
              }
            }
          }
        }
      }
    }
  }
}
