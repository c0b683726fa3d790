// Kernel bodies of the CPU stripe conv, written once over a GCC vector type.
// stripe_cpu.cpp has cpu/common/for_each_isa.inc include this file once per
// instruction set (deliberately no include guard), in its own namespace and
// `#pragma GCC target` region, after the SIMD primitives of cpu/common/simd.h
// and the ISA constants that file lists; the std headers,
// cpu/common/conv_layout.h and stripe_plans.h are included before.
//
// All three passes are register-tiled GEMMs over the layouts of
// cpu/common/wide_layout.h, per (group, kernel position k), O_k being the output
// channels that keep tap k (one column of the transposed view):
//   forward      Y[O_k, q] += W_k[O_k, c] X[c, q + off_k]: tiles of R stripes of
//                one column x PV pixel vectors (PV larger when R is small), the
//                input vector loaded once per c and R weights broadcast (packed
//                per tile as [c][R]); accumulated over the taps in a per-item
//                buffer [output channels][pixel chunk], bias-initialised, then
//                stored to NCHW. Items: (group, pixel chunk, output-channel block).
//   grad-input   dX[c, q] = sum_k sum_{s in O_k} W[s, c] G[o_s, q + off_k] on each
//                phase plane of dX over its taps k (polyphase: no zeros of a
//                dilated grad_out multiplied): tiles of R input channels x PV
//                pixel vectors reduced in registers over blocks of a tap's
//                stripes (weights packed [j][R]). Items: (group, pixel chunk,
//                input-channel block), every phase.
//   grad-weight  dW[s, c] = sum_q G[o_s, q] X[c, q + off_k]: tiles of r stripes of
//                one column x 12/r channels of pixel-vector partial sums, reduced
//                at the end of each pixel chunk; each thread owns a fixed range of
//                stripe tiles (no cross-thread reduction; the summation order does
//                not depend on the thread count).
// Pixel chunks keep the rows an item reads (plus the tap offsets' span) in L2.

// Pixel vectors per register tile (forward and grad-input).
constexpr int kPV = 2;
// Rows (output channels / input channels) per register tile.
constexpr int kRows = kAccRegs / kPV;
// Grad-weight tile: up to kGwR stripes x gw_cols(r) input channels (AVX2:
// 6 x 2; 4 x 3 measured no faster on the EPYC, cpu_grad_weight_kernels.md).
constexpr int kGwR = 6;
constexpr int gw_cols(int r) { return std::clamp(kAccRegs / r, 1, 8); }

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// Pixel vectors per forward register tile of R output channels: few
// channels (a sparse tap) get more pixels, so the input vectors loaded per
// input channel still feed kAccRegs accumulators.
constexpr int fwd_vectors(int R) { return std::clamp(kAccRegs / R, kPV, 6); }
// Input channels the forward micro-kernel prefetches ahead.
constexpr int kFwdPrefetch = 8;

// y[r][q .. q + PV*L) += sum_c w[c * R + r] * x[c * cs + q .. q + PV*L).
template <typename T, int R, int PV>
inline void fwd_block(const T* w, const T* x, int64_t cs, int64_t cin_g, T* const* yrows,
                      int64_t q) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  T* y[R];
  for (int r = 0; r < R; ++r) y[r] = yrows[r] + q;
  // Loops over acc unrolled whole, as block1xn's fwd_tile: rolled, GCC
  // kept acc in a stack array around them.
  V acc[R][PV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < PV; ++v) acc[r][v] = vload<V>(y[r] + v * L);
  const T* xq = x + q;
  const T* wc = w;
  for (int64_t c = 0; c < cin_g; ++c, xq += cs, wc += R) {
    // Each channel's pixels are a new cache line or two (channel stride cs):
    // fetch a few channels ahead (prefetching past the buffer cannot fault).
    __builtin_prefetch(xq + kFwdPrefetch * cs);
    __builtin_prefetch(xq + kFwdPrefetch * cs + PV * L - 1);
    V xv[PV];
    for (int v = 0; v < PV; ++v) xv[v] = vload<V>(xq + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V s = vbcast<V>(wc[r]);
      for (int v = 0; v < PV; ++v) acc[r][v] = vfma(s, xv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < PV; ++v) vstore(y[r] + v * L, acc[r][v]);
}

// Every pixel of [0, nq) (a multiple of L): wide blocks, then single vectors.
template <typename T, int R>
void fwd_tile(const T* w, const T* x, int64_t cs, int64_t cin_g, T* const* yrows, int64_t nq) {
  constexpr int L = lanes<T>();
  constexpr int PV = fwd_vectors(R);
  int64_t q = 0;
  for (; q + PV * L <= nq; q += PV * L) fwd_block<T, R, PV>(w, x, cs, cin_g, yrows, q);
  for (; q < nq; q += L) fwd_block<T, R, 1>(w, x, cs, cin_g, yrows, q);
}

template <typename T>
void forward(const ConvGeometry& geo, const Stripes& st, const T* values, const T* input,
             Strides4 in_s, const T* bias, const OutputClamp& clamp, T* output,
             int num_threads) {
  using namespace stripe_plan;
  constexpr int L = lanes<T>();
  constexpr int64_t QT = kPV * L;
  if (geo.batch == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t cin_g = geo.cin_per_group(), cout_g = geo.cout_per_group();
  const int64_t taps = geo.taps(), G = geo.groups, ohw = geo.out_h * geo.out_w;

  InputSource<T> src(geo, QT);
  const int64_t CH = chunk_pixels(src.phases * cin_g, src.span, sizeof(T), QT,
                                  src.wide.npix);
  const int64_t nchunks_max = (src.wide.npix + CH - 1) / CH;
  const int64_t nob = num_blocks(cout_g, G * nchunks_max, num_threads, kRows);
  // Few weights per item (small Cin, sparse): every tap and tile runs over a
  // sub-block of QB pixels before the next, so the item's accumulator rows
  // stay in L1 while the (small) packed weights are re-read; otherwise a tile
  // sweeps the whole chunk with its weights in L1. QB is a multiple of every
  // fwd_tile block width (16, 24, 32, 48 floats).
  const int64_t item_weights = st.nnz / std::max<int64_t>(1, G * nob) * cin_g * int64_t(sizeof(T));
  // (Not for Cin < 8: the accumulators are few loads per input channel there
  // and the sub-blocks measured slower on the 3-channel stem.)
  const int64_t QB = (item_weights <= (20 << 10) && cin_g >= 8) ? 12 * QT : CH;
  auto ob_lo = [&](int64_t ob) { return ob * cout_g / nob; };
  int64_t on_max = 0;
  for (int64_t ob = 0; ob < nob; ++ob) on_max = std::max(on_max, ob_lo(ob + 1) - ob_lo(ob));

  // Weights per (column, output block) segment, in tiles of kRows stripes:
  // the tile at position j0 with r stripes holds [c][r] at j0 * cin_g.
  T* const wpk = scratch_array<T>(kWeightSlot, st.nnz * cin_g);

#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t col = 0; col < G * taps; ++col) {
      const int64_t g = col / taps;
      for (int64_t ob = 0; ob < nob; ++ob) {
        int64_t lo, hi;
        column_segment(st, col, g * cout_g, ob_lo(ob), ob_lo(ob + 1), lo, hi);
        const int64_t nt = num_tiles(lo, hi, kRows);
        for (int64_t i = 0; i < nt; ++i) {
          const int64_t j0 = tile_start(lo, hi, nt, i), r = tile_start(lo, hi, nt, i + 1) - j0;
          T* d = wpk + j0 * cin_g;
          for (int64_t i = 0; i < r; ++i) {
            const T* v = values + int64_t(st.stripe_idx[j0 + i]) * cin_g;
            for (int64_t c = 0; c < cin_g; ++c) d[c * r + i] = v[c];
          }
        }
      }
    }

    T* const ybuf = scratch_array<T>(kTileSlot, on_max * CH);
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(input, in_s, b0, nb);
      const Wide wide = src.layout(nb);
      const int64_t npix = wide.npix, nchunks = (npix + CH - 1) / CH;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < G * nchunks * nob; ++item) {
        const int64_t g = item / (nchunks * nob), ch = item / nob % nchunks, ob = item % nob;
        const int64_t q0 = ch * CH, nq = std::min(CH, npix - q0);
        const int64_t olo = ob_lo(ob), on = ob_lo(ob + 1) - olo;
        const int64_t ofirst = g * cout_g + olo;
        T* y = ybuf;
        for (int64_t o = 0; o < on; ++o)
          std::fill(y + o * CH, y + o * CH + nq, bias ? bias[ofirst + o] : T(0));
        for (int64_t qb = 0; qb < nq; qb += QB) {
          const int64_t nqb = std::min(QB, nq - qb);
          for (int64_t k = 0; k < taps; ++k) {
            int64_t lo, hi;
            column_segment(st, g * taps + k, g * cout_g, olo, olo + on, lo, hi);
            const T* x = src.at(g, k) + q0 + qb;
            const int64_t nt = num_tiles(lo, hi, kRows);
            for (int64_t ti = 0; ti < nt; ++ti) {
              const int64_t j0 = tile_start(lo, hi, nt, ti);
              const int r = static_cast<int>(tile_start(lo, hi, nt, ti + 1) - j0);
              T* yrows[kRows];
              for (int i = 0; i < r; ++i)
                yrows[i] = y + (st.stripe_row[j0 + i] - ofirst) * CH + qb;
              const T* w = wpk + j0 * cin_g;
              with_count<kRows>(r, [&](auto rc) {
                fwd_tile<T, decltype(rc)::value>(w, x, src.cs, cin_g, yrows, nqb);
              });
            }
          }
        }
        for (int64_t o = 0; o < on; ++o) {
          if (clamp.active()) clamp_row(y + o * CH, nq, clamp);
          wide.store(y + o * CH, q0, nq, output + b0 * geo.cout * ohw + (ofirst + o) * ohw,
                     geo.cout * ohw);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Grad input
// ---------------------------------------------------------------------------

// out[r][0 .. PV*L) (+)= sum_j w[j * R + r] * g[goff[j] + 0 .. PV*L) for one
// pixel tile: `first` starts from 0, else adds to what out holds.
template <typename T, int R>
inline void gi_tile(const T* w, int64_t K, const int64_t* goff, const T* g, T* const* orows,
                    int64_t q, bool first) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[R][kPV];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < kPV; ++v) acc[r][v] = first ? V{} : vload<V>(orows[r] + q + v * L);
  const T* gq = g + q;
  const T* wj = w;
  for (int64_t j = 0; j < K; ++j, wj += R) {
    const T* gp = gq + goff[j];
    V gv[kPV];
    for (int v = 0; v < kPV; ++v) gv[v] = vload<V>(gp + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const V s = vbcast<V>(wj[r]);
      for (int v = 0; v < kPV; ++v) acc[r][v] = vfma(s, gv[v], acc[r][v]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int v = 0; v < kPV; ++v) vstore(orows[r] + q + v * L, acc[r][v]);
}

// Stripes per block of the grad-input reduction: the grad_out vectors one
// pixel tile reads for a block (two cache lines per stripe) stay in L1 while
// every channel tile of the item reuses them.
constexpr int64_t kGiStripeBlock = 128;

template <typename T>
void grad_input(const ConvGeometry& geo, const Stripes& st, const T* values, const T* grad_out,
                Strides4 go_s, T* grad_input, int num_threads) {
  using namespace stripe_plan;
  constexpr int L = lanes<T>();
  constexpr int64_t QT = kPV * L;
  if (geo.batch == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t cin_g = geo.cin_per_group(), cout_g = geo.cout_per_group();
  const int64_t taps = geo.taps(), G = geo.groups, hw = geo.in_h * geo.in_w;

  // On the stride's phase planes of dX: each phase takes the stripes of its
  // taps only, over grad_out undilated (wide_layout.h, GradSource).
  GradSource<T> src(geo, QT, /*polyphase=*/true);
  const int64_t nphases = static_cast<int64_t>(src.phases.size());
  const int64_t CH = chunk_pixels(cout_g, src.span, sizeof(T), QT, src.wide.npix);
  const int64_t nchunks_max = (src.wide.npix + CH - 1) / CH;
  const int64_t nct = (cin_g + kRows - 1) / kRows;  // channel tiles per group
  const int64_t ncb = num_blocks(nct, G * nchunks_max, num_threads, 1);
  auto cb_lo = [&](int64_t cb) { return cb * nct / ncb; };  // in tiles
  int64_t cn_max = 0;
  for (int64_t cb = 0; cb < ncb; ++cb)
    cn_max = std::max(cn_max, std::min(cin_g, cb_lo(cb + 1) * kRows) - cb_lo(cb) * kRows);

  // Per group g (positions [j_g, j_g+1) of its columns): channel tile c0 of
  // r channels holds [j][r] at j_g * cin_g + (j_g+1 - j_g) * c0.
  T* const wpk = scratch_array<T>(kWeightSlot, st.nnz * cin_g);
  int64_t* const goff = scratch_array<int64_t>(kOffsetSlot, st.nnz);

#pragma omp parallel num_threads(num_threads)
  {
#pragma omp for schedule(static)
    for (int64_t col = 0; col < G * taps; ++col) {
      const int64_t g = col / taps, k = col % taps;
      for (int64_t j = st.tap_ptr[col]; j < st.tap_ptr[col + 1]; ++j)
        goff[j] = (st.stripe_row[j] - g * cout_g) * src.cs + src.off[k];
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < G * nct; ++i) {
      const int64_t g = i / nct, c0 = i % nct * kRows, r = std::min<int64_t>(kRows, cin_g - c0);
      const int64_t jg = st.tap_ptr[g * taps], K = st.tap_ptr[(g + 1) * taps] - jg;
      T* d = wpk + jg * cin_g + K * c0;
      for (int64_t j = 0; j < K; ++j) {
        const T* v = values + int64_t(st.stripe_idx[jg + j]) * cin_g + c0;
        for (int64_t c = 0; c < r; ++c) d[j * r + c] = v[c];
      }
    }

    T* const xbuf = scratch_array<T>(kTileSlot, nphases * cn_max * CH);
    std::vector<const T*> from(nphases), at(nphases);
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(grad_out, go_s, b0, nb);
      const Wide wide = src.layout(nb);
      const int64_t npix = wide.npix, nchunks = (npix + CH - 1) / CH;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < G * nchunks * ncb; ++item) {
        const int64_t g = item / (nchunks * ncb), ch = item / ncb % nchunks, cb = item % ncb;
        const int64_t q0 = ch * CH, nq = std::min(CH, npix - q0);
        const int64_t c_lo = cb_lo(cb) * kRows, c_hi = std::min(cin_g, cb_lo(cb + 1) * kRows);
        const int64_t jg = st.tap_ptr[g * taps], K = st.tap_ptr[(g + 1) * taps] - jg;
        const T* gbase = src.buf + g * cout_g * src.cs + q0;
        for (int64_t p = 0; p < nphases; ++p) {
          // Phase p's channel c at xb[(c - c_lo) * CH]; null while no stripe
          // of its taps has written it (its dX pixels are then zero).
          T* const xb = xbuf + p * cn_max * CH;
          from[p] = nullptr;
          for (const int t : src.phases[p].taps) {
            const int64_t j0 = st.tap_ptr[g * taps + t] - jg;
            const int64_t kt = st.tap_ptr[g * taps + t + 1] - jg - j0;
            // Near-equal stripe blocks of this tap's stripes.
            const int64_t nkb = std::max<int64_t>(1, kt / kGiStripeBlock);
            for (int64_t kb = 0; kb < nkb && kt > 0; ++kb) {
              const int64_t k0 = j0 + kt * kb / nkb, kn = j0 + kt * (kb + 1) / nkb - k0;
              for (int64_t q = 0; q < nq; q += QT) {
                for (int64_t c0 = c_lo; c0 < c_hi; c0 += kRows) {
                  const int r = static_cast<int>(std::min<int64_t>(kRows, c_hi - c0));
                  T* orows[kRows];
                  for (int i = 0; i < r; ++i) orows[i] = xb + (c0 - c_lo + i) * CH;
                  const T* w = wpk + jg * cin_g + K * c0 + k0 * r;
                  with_count<kRows>(r, [&](auto rc) {
                    gi_tile<T, decltype(rc)::value>(w, kn, goff + jg + k0, gbase, orows, q,
                                                    from[p] == nullptr);
                  });
                }
              }
              from[p] = xb;
            }
          }
        }
        for (int64_t c = c_lo; c < c_hi; ++c) {
          for (int64_t p = 0; p < nphases; ++p)
            at[p] = from[p] ? from[p] + (c - c_lo) * CH : nullptr;
          src.store(at.data(), q0, nq, wide,
                    grad_input + b0 * geo.cin * hw + (g * cin_g + c) * hw, geo.cin * hw);
        }
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Grad weight
// ---------------------------------------------------------------------------

template <typename T>
void grad_weight(const ConvGeometry& geo, const Stripes& st, const T* input, Strides4 in_s,
                 const T* grad_out, Strides4 go_s, T* grad_values, int num_threads) {
  using namespace stripe_plan;
  constexpr int64_t QT = kPV * lanes<T>();
  const int64_t cin_g = geo.cin_per_group();
  std::fill(grad_values, grad_values + st.nnz * cin_g, T(0));
  if (geo.batch == 0 || st.nnz == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t taps = geo.taps(), G = geo.groups;

  InputSource<T> src(geo, QT);
  WideGradOut<T> gw(geo, src.wide, src.group);
  const int64_t CH = chunk_pixels(src.phases * cin_g, src.span, sizeof(T), QT,
                                  src.wide.npix, 384 << 10, 16, 8192);

  // Stripe tiles (column position j0, count r, column), split evenly over threads.
  struct Tile {
    int64_t j0;
    int r;
    int64_t col;
  };
  std::vector<Tile> tiles;
  for (int64_t col = 0; col < G * taps; ++col) {
    const int64_t lo = st.tap_ptr[col], hi = st.tap_ptr[col + 1], n = num_tiles(lo, hi, kGwR);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j0 = tile_start(lo, hi, n, i);
      tiles.push_back({j0, static_cast<int>(tile_start(lo, hi, n, i + 1) - j0), col});
    }
  }
  const int64_t nt = static_cast<int64_t>(tiles.size());

  // Unmasked first. A non-finite result means a non-finite input or
  // grad_out, and maybe products the conv never forms (RealLanes): then
  // again with those lanes cleared. Finite results cost one scan of them.
  for (const bool nonfinite : {false, true}) {
    if (nonfinite) {
      if (!any_nonfinite(grad_values, st.nnz * cin_g)) break;
      std::fill(grad_values, grad_values + st.nnz * cin_g, T(0));
    }
#pragma omp parallel num_threads(num_threads)
    {
      const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
      const int64_t t_lo = nt * tid / nth, t_hi = nt * (tid + 1) / nth;
      RealLanes<T> lanes_real;
      for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
        const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
        const Wide wide = src.layout(nb);
        src.build(input, in_s, b0, nb);
        gw.build(grad_out, go_s, b0, wide);
        const int64_t npix = wide.npix;
        for (int64_t q0 = 0; q0 < npix; q0 += CH) {
          const int64_t nq = std::min(CH, npix - q0);
          const RealLanes<T>* real = nullptr;
          if (nonfinite) lanes_real.build(wide, q0, q0 + nq), real = &lanes_real;
          for (int64_t t = t_lo; t < t_hi; ++t) {
            const Tile& tl = tiles[t];
            const int64_t g = tl.col / taps, k = tl.col % taps;
            const T* gr[kGwR];
            T* dw[kGwR];
            for (int i = 0; i < tl.r; ++i) {
              gr[i] = gw.buf + int64_t(st.stripe_row[tl.j0 + i]) * gw.cs + q0;
              dw[i] = grad_values + int64_t(st.stripe_idx[tl.j0 + i]) * cin_g;
            }
            const T* xk = src.at(g, k) + q0;
            with_count<kGwR>(tl.r, [&](auto rc) {
              constexpr int R = decltype(rc)::value, C = gw_cols(R);
              for (int64_t c0 = 0; c0 < cin_g; c0 += C) {
                const int nc = static_cast<int>(std::min<int64_t>(C, cin_g - c0));
                const T* xr[C];
                for (int c = 0; c < nc; ++c) xr[c] = xk + (c0 + c) * src.cs;
                T* dwc[R];
                for (int i = 0; i < R; ++i) dwc[i] = dw[i] + c0;
                with_count<C>(nc, [&](auto cc) {
                  wide_dot_tile<T, R, decltype(cc)::value>(
                      gr, xr, nq, real, [&](int r, int c) -> T& { return dwc[r][c]; });
                });
              }
            });
          }
        }
      }
    }
  }
}
