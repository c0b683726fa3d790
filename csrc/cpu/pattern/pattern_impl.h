// Kernel bodies of the CPU pattern conv, written once over a GCC vector type.
// pattern_cpu.cpp has cpu/common/for_each_isa.inc include this file once per
// instruction set (deliberately no include guard), in its own namespace and
// `#pragma GCC target` region, after the SIMD primitives of cpu/common/simd.h;
// the std headers, cpu/common/conv_layout.h and pattern_plans.h are included
// before.
//
// The activations are in the wide layouts of cpu/common/wide_layout.h (every
// tap a constant offset); a plan (pattern_plans.h) lists each row's kept
// weights as (offset, weight) pairs per block of columns. Pixels are split in
// tiles of kR vectors (the register tile):
//   forward      per (group, tile): for each block of Cb input channels (their
//                planes over the tile + the taps' span fit L1), every output
//                channel's kR accumulators (bias / the partial sums of the
//                previous blocks) take one broadcast and kR FMAs per kept
//                weight of the block; after the last block the tile is stored
//                to NCHW (wide pixels that are not real are dropped).
//   grad-input   the same sweep over grad_out dilated by the stride and
//                zero-padded (GradSource: the kernel flipped into the tap
//                offsets), rows = input channels through the transposed view.
//   grad-weight  per kept weight (o, c, tap): sum over wide pixels q of
//                G[o, q] X[c, q + off[tap]] (G zero at wide pixels that are
//                not real); each thread owns a range of output channels (no
//                cross-thread reduction, thread-count independent), the
//                tile of G[o] in registers, kR FMAs and one horizontal sum
//                per kept weight and tile.

constexpr int kR = 12;  // vectors per pixel tile
// Bytes of a block's planes (tile + span) the forward/grad-input sweep keeps in L1
// (half of a 32 KiB L1: the plan and the partial sums stream through it too;
// 8-24 KiB measured alike within the noise of a shared machine).
constexpr int64_t kBlockBudget = 16 << 10;

// dst[0 .. kR*L) = init + sum_e ent[e].w * base[ent[e].off + 0 .. kR*L).
template <typename T>
inline void sweep_tile(const T* base, const pattern_plan::Entry<T>* ent, int64_t n,
                       const T* init_buf, T init, T* dst) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[kR];
  if (init_buf) {
    for (int r = 0; r < kR; ++r) acc[r] = vload<V>(init_buf + r * L);
  } else {
    const V b = vbcast<V>(init);
    for (int r = 0; r < kR; ++r) acc[r] = b;
  }
  for (int64_t e = 0; e < n; ++e) {
    const T* p = base + ent[e].off;
    const V s = vbcast<V>(ent[e].w);
#pragma GCC unroll 24
    for (int r = 0; r < kR; ++r) acc[r] = vfma(s, vload<V>(p + r * L), acc[r]);
  }
  for (int r = 0; r < kR; ++r) vstore(dst + r * L, acc[r]);
}

// One conv as plan-driven sweeps over a wide source (forward: InputSource,
// grad-input: GradSource). Output row `row` of image b goes to
// out[(b * plan.rows + row) * out_hw ...]; rows of group g read the group's
// `plan.cols` planes of the source.
template <typename T, typename Source>
void sweep_conv(const ConvGeometry& geo, const pattern_plan::Plan<T>& plan, Source& src,
                const T* act, Strides4 s, const T* bias, const OutputClamp& clamp, T* out,
                int64_t out_hw, int num_threads) {
  using namespace wide;
  constexpr int64_t TT = kR * lanes<T>();
  const int64_t G = geo.groups, rows_g = plan.rows / G, nbk = plan.nblocks;
  const int64_t cols = plan.cols, cs = src.cs;
#pragma omp parallel num_threads(num_threads)
  {
    T* const ybuf = scratch_array<T>(kTileSlot, (nbk > 1 ? rows_g : 0) * TT + TT);
    T* const tmp = ybuf + (nbk > 1 ? rows_g : 0) * TT;
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(act, s, b0, nb);
      const Wide wide = src.layout(nb);
      const int64_t ntiles = wide.npix / TT;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < G * ntiles; ++item) {
        const int64_t g = item / ntiles, q0 = item % ntiles * TT;
        const T* base = src.buf + g * cols * cs + q0;
        for (int64_t bk = 0; bk < nbk; ++bk) {
          const bool last = bk == nbk - 1;
          for (int64_t rl = 0; rl < rows_g; ++rl) {
            const int64_t row = g * rows_g + rl;
            const int64_t lo = plan.begin(row, bk), hi = plan.end(row, bk);
            T* y = ybuf + rl * TT;
            sweep_tile<T>(base, plan.ent.data() + lo, hi - lo,
                          bk ? y : nullptr, bias ? bias[row] : T(0), last ? tmp : y);
            if (!last) continue;
            if (clamp.active()) clamp_row(tmp, TT, clamp);
            wide.store(tmp, q0, TT, out + (b0 * plan.rows + row) * out_hw, plan.rows * out_hw);
          }
        }
      }
    }
  }
}

template <typename T>
void forward(const ConvGeometry& geo, const Patterns& p, const T* values, const T* input,
             Strides4 in_s, const T* bias, const OutputClamp& clamp, T* output, int num_threads,
             uint64_t topology_id) {
  using namespace wide;
  constexpr int64_t TT = kR * lanes<T>();
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
  InputSource<T> src(geo, TT);
  int64_t block, nblocks;
  pattern_plan::choose_blocks(geo.cin_per_group(), src.phases, TT, src.span, sizeof(T),
                              kBlockBudget, block, nblocks);
  // topology_id != 0: the bindings validated these index tensors under that id
  // (pattern_plans.h, cached_index_plan); reuse the plan's offsets.
  const auto plan =
      topology_id ? pattern_plan::with_weights<T>(
                        *pattern_plan::cached_index_plan<T>(topology_id, geo, p, src.cs,
                                                            src.off, block, nblocks),
                        values)
                  : pattern_plan::forward_plan<T>(geo, p, values, src.cs, src.off, block,
                                                  nblocks);
  sweep_conv<T>(geo, plan, src, input, in_s, bias, clamp, output, ohw, num_threads);
}

template <typename T>
void grad_input(const ConvGeometry& geo, const Patterns& p, const T* values, const T* grad_out,
                Strides4 go_s, T* grad_input, int num_threads, uint64_t topology_id) {
  using namespace wide;
  constexpr int64_t TT = kR * lanes<T>();
  const int64_t hw = geo.in_h * geo.in_w;
  if (geo.batch == 0) return;
  num_threads = std::max(num_threads, 1);
  if (p.nnz == 0) {
    const int64_t n = geo.batch * geo.cin * hw;
#pragma omp parallel for num_threads(num_threads) schedule(static)
    for (int64_t i = 0; i < geo.batch * geo.cin; ++i)
      std::fill(grad_input + i * hw, grad_input + (i + 1) * hw, T(0));
    (void)n;
    return;
  }
  GradSource<T> src(geo, TT);
  int64_t block, nblocks;
  pattern_plan::choose_blocks(geo.cout_per_group(), 1, TT, src.span, sizeof(T), kBlockBudget,
                              block, nblocks);
  // topology_id != 0: reuse the cached plan's offsets (as the forward does).
  const auto plan =
      topology_id
          ? pattern_plan::with_weights<T>(
                *pattern_plan::cached_index_plan<T>(topology_id, geo, p, src.cs, src.off, block,
                                                    nblocks,
                                                    pattern_plan::PlanKind::kGradInput),
                values)
          : pattern_plan::grad_input_plan<T>(geo, p, values, src.cs, src.off, block, nblocks);
  sweep_conv<T>(geo, plan, src, grad_out, go_s, nullptr, OutputClamp{}, grad_input, hw,
                num_threads);
}

// gv[val[e]] += sum_q g[q] * base[ent[e].off + q] over the tile, g in
// registers; the input lanes that are not real cleared first when `real`
// is given (kMasked; see RealLanes).
template <typename T, bool kMasked>
inline void dot_tile(const T* g, const T* base, const pattern_plan::Entry<T>* ent,
                     const int32_t* val, int64_t n, const RealLanes<T>* real, T* gv) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V gr[kR];
  for (int r = 0; r < kR; ++r) gr[r] = vload<V>(g + r * L);
  auto x = [&](const T* p, int r) {
    const V v = vload<V>(p + r * L);
    if constexpr (kMasked) return real->keep(v, r);
    return v;
  };
  for (int64_t e = 0; e < n; ++e) {
    const T* p = base + ent[e].off;
    V a0 = gr[0] * x(p, 0), a1 = gr[1] * x(p, 1), a2 = gr[2] * x(p, 2);
#pragma GCC unroll 24
    for (int r = 3; r < kR; r += 3) {
      a0 = vfma(gr[r], x(p, r), a0);
      a1 = vfma(gr[r + 1], x(p, r + 1), a1);
      a2 = vfma(gr[r + 2], x(p, r + 2), a2);
    }
    gv[val[e]] += vsum(a0 + a1 + a2);
  }
}
static_assert(kR % 3 == 0, "dot_tile runs three accumulators");

template <typename T>
void grad_weight(const ConvGeometry& geo, const Patterns& p, const T* input, Strides4 in_s,
                 const T* grad_out, Strides4 go_s, T* grad_values, int num_threads,
                 uint64_t topology_id) {
  using namespace wide;
  constexpr int64_t TT = kR * lanes<T>();
  std::fill(grad_values, grad_values + p.nnz_values, T(0));
  if (geo.batch == 0 || p.nnz_values == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t cin_g = geo.cin_per_group(), cout_g = geo.cout_per_group();

  InputSource<T> src(geo, TT);
  WideGradOut<T> gw(geo, src.wide, src.group);
  int64_t block, nblocks;
  pattern_plan::choose_blocks(cin_g, src.phases, TT, src.span, sizeof(T), kBlockBudget, block,
                              nblocks);
  // The plan holds no weights (value indices only): topology_id != 0 reuses
  // the cached one as it is.
  std::shared_ptr<const pattern_plan::Plan<T>> cached;
  pattern_plan::Plan<T> built;
  if (topology_id)
    cached = pattern_plan::cached_index_plan<T>(topology_id, geo, p, src.cs, src.off, block,
                                                nblocks, pattern_plan::PlanKind::kForward);
  else
    built = pattern_plan::forward_plan<T>(geo, p, static_cast<const T*>(nullptr), src.cs,
                                          src.off, block, nblocks);
  const pattern_plan::Plan<T>& plan = topology_id ? *cached : built;
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
      // Output channels [o_lo, o_hi): near-equal shares of the kept weights.
      const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
      auto split = [&](int64_t k) {
        if (k >= nth) return int64_t(geo.cout);
        const int32_t target = static_cast<int32_t>(p.nnz_values * k / nth);
        int64_t o = 0;
        while (o < geo.cout && p.value_ptr[p.row_ptr[o]] < target) ++o;
        return o;
      };
      const int64_t o_lo = split(tid), o_hi = split(tid + 1);
      RealLanes<T> lanes_real;
      for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
        const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
        const Wide wide = src.layout(nb);
        src.build(input, in_s, b0, nb);
        gw.build(grad_out, go_s, b0, wide);
        for (int64_t q0 = 0; q0 < wide.npix; q0 += TT) {
          if (nonfinite) lanes_real.build(wide, q0, q0 + TT);
          for (int64_t bk = 0; bk < nblocks; ++bk) {
            for (int64_t o = o_lo; o < o_hi; ++o) {
              const int64_t lo = plan.begin(o, bk), hi = plan.end(o, bk);
              if (lo == hi) continue;
              const T* base = src.buf + (o / cout_g) * cin_g * cs + q0;
              const T* g = gw.buf + o * gw.cs + q0;
              if (nonfinite)
                dot_tile<T, true>(g, base, plan.ent.data() + lo, plan.val.data() + lo, hi - lo,
                                  &lanes_real, grad_values);
              else
                dot_tile<T, false>(g, base, plan.ent.data() + lo, plan.val.data() + lo, hi - lo,
                                   nullptr, grad_values);
            }
          }
        }
      }
    }
  }
}
