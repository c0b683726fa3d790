// Kernel bodies of the CPU 1xN block conv, written once over a GCC vector
// type. block1xn_cpu.cpp has cpu/common/for_each_isa.inc include this file
// once per instruction set (deliberately no include guard), in its own
// namespace and `#pragma GCC target` region, after the SIMD primitives of
// cpu/common/simd.h and the ISA constants that file lists; the std headers,
// cpu/common/conv_layout.h and block1xn_plans.h are included before.

// ---------------------------------------------------------------------------
// Forward: pixels in the vector (as XNNPACK's sparse NCHW kernels), over the
// "wide" input of cpu/common/wide_layout.h (InputSource), in which every tap
// is a constant offset from an output pixel, for any stride, padding and
// dilation. A register tile is J output channels of one block row x U pixel
// vectors: per kept block and tap, U input vectors are loaded once and J
// weights broadcast, J*U FMAs. The weights are read in the format's own
// [nnzb][taps][N] layout (J consecutive scalars per tap): no packing.
// ---------------------------------------------------------------------------

// Output channels per register tile: J*U accumulators + U input vectors + a
// broadcast fill the vector registers with U >= 3 (AVX-512: 8 x 3, AVX2 and
// SSE: 4 x 2).
constexpr int kFwdMaxJ = kVecRegs / 4;
// Pixel vectors per tile of J channels: every vector register but one spare.
constexpr int fwd_vectors(int J) { return std::clamp((kVecRegs - 2) / (J + 1), 1, 8); }
// Slack past a pixel chunk that a tile may read (the widest tile).
constexpr int kFwdMaxTile = fwd_vectors(1);

// Blocks ahead whose input rows fwd_tile prefetches.
constexpr int kFwdPrefetch = 4;

template <typename T>
struct FwdTile {
  const T* x;              // input channel 0 of the group at the tile's first pixel
  int64_t cs;              // input channel stride
  const int64_t* tap_off;  // per tap
  int taps;
  const int32_t* col;      // the row's kept input channels (block columns)
  const T* w;              // the row's first block, [taps][n], at lane j0
  int64_t nblocks;
  int n;                   // weight stride of one tap
};

// acc[j][u] = init[j] + sum over the row's blocks k and taps t of
// w[k][t][j] * x[col[k]][off[t] + u*L ..]: J channels x U vectors.
template <typename T, int J, int U>
inline void fwd_tile(const FwdTile<T>& a, const T* init, T* dst, int64_t dst_ld) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[J][U];
  for (int j = 0; j < J; ++j)
    for (int u = 0; u < U; ++u) acc[j][u] = vbcast<V>(init ? init[j] : T(0));
  const int64_t wstep = int64_t(a.taps) * a.n;
  const T* wk = a.w;
  for (int64_t k = 0; k < a.nblocks; ++k, wk += wstep) {
    const T* xc = a.x + a.col[k] * a.cs;
    // The input rows of a block a few ahead: blocks read scattered channels,
    // which the hardware prefetchers do not follow.
    if (k + kFwdPrefetch < a.nblocks) {
      const T* next = a.x + a.col[k + kFwdPrefetch] * a.cs + a.tap_off[0];
      for (int u = 0; u < U * L; u += 64 / int(sizeof(T))) __builtin_prefetch(next + u);
    }
    for (int t = 0; t < a.taps; ++t) {
      const T* xt = xc + a.tap_off[t];
      const T* wt = wk + t * a.n;
      V xv[U];
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) xv[u] = vload<V>(xt + u * L);
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) {
        const V s = vbcast<V>(wt[j]);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) acc[j][u] = vfma(s, xv[u], acc[j][u]);
      }
    }
  }
  for (int j = 0; j < J; ++j)
    for (int u = 0; u < U; ++u) vstore(dst + j * dst_ld + u * L, acc[j][u]);
}

// One tile of U vectors at wide pixel q for lanes [j0, j0 + J) of a block
// row, stored: vector u goes whole to output offset dst[u] (its pixels are
// real and consecutive in the output), or, where dst[u] < 0, through
// Wide::store, which drops the pixels that are not real.
template <typename T, int J, int U>
inline void fwd_store(const FwdTile<T>& a, const wide::Wide& wide, int64_t q, int64_t q1,
                      const int64_t* dst, const T* init, T* tmp, T* out, int64_t out_cs,
                      int64_t img_stride) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>(), TT = U * L;
  FwdTile<T> t = a;
  t.x = a.x + q;
  fwd_tile<T, J, U>(t, init, tmp, TT);
  for (int u = 0; u < U; ++u) {
    const int64_t qu = q + u * L;
    if (qu >= q1) break;
    if (dst[u] >= 0) {
      T* o = out + dst[u];
      for (int j = 0; j < J; ++j) vstore(o + j * out_cs, vload<V>(tmp + j * TT + u * L));
    } else {
      const int64_t n = std::min<int64_t>(L, q1 - qu);
      for (int j = 0; j < J; ++j)
        wide.store(tmp + j * TT + u * L, qu, n, out + j * out_cs, img_stride);
    }
  }
}

// Where fwd_lanes stores the vectors of pixels [q0, q1): dst[v] for the
// vector at q0 + v * L (v < (q1 - q0) / L), dst[last] for the partial one at
// q1 - L; -1 where a vector is not whole (Wide::whole_vector). Built once per
// pixel chunk: the divisions it takes would cost as much as a short row's FMAs.
template <int L>
inline void fwd_store_map(const wide::Wide& wide, int64_t q0, int64_t q1, int64_t img_stride,
                          std::vector<int64_t>& dst) {
  dst.clear();
  auto at = [&](int64_t q) {
    return q + L <= q1 && wide.whole_vector(q, L) ? wide.out_offset(q, img_stride) : -1;
  };
  for (int64_t q = q0; q + L <= q1; q += L) dst.push_back(at(q));
  dst.push_back(at(std::max(q0, q1 - L)));
}

// Pixels [q0, q1) of the wide layout for lanes [j0, j0 + J) of a block row:
// tiles of U vectors, then as few whole vectors as the rest holds, then a
// last partial vector moved back to end at q1 (it recomputes and stores again
// a few pixels of this call, so no read passes q1: a direct source has no
// slack). Only a range shorter than one vector reads past q1 (copied sources).
template <typename T, int J>
void fwd_lanes(const FwdTile<T>& a, const wide::Wide& wide, int64_t q0, int64_t q1,
               const int64_t* dst, const T* init, T* tmp, T* out, int64_t out_cs,
               int64_t img_stride) {
  constexpr int L = lanes<T>(), U = fwd_vectors(J);
  auto tile = [&](auto V, int64_t q, const int64_t* d) {
    fwd_store<T, J, decltype(V)::value>(a, wide, q, q1, d, init, tmp, out, out_cs, img_stride);
  };
  int64_t q = q0;
  for (; q + U * L <= q1; q += U * L) tile(std::integral_constant<int, U>{}, q, dst + (q - q0) / L);
  if (const int whole = static_cast<int>((q1 - q) / L)) {
    with_count<U>(whole, [&](auto V) { tile(V, q, dst + (q - q0) / L); });
    q += whole * L;
  }
  if (q < q1)
    tile(std::integral_constant<int, 1>{}, std::max(q0, q1 - L), dst + (q1 - q0) / L);
}

// The input as a forward sweep reads it: group channel c of tap t at
// x + c * cs + off[t] + q for wide pixel q of the layout `wide`.
template <typename T>
struct FwdSource {
  const T* x;
  int64_t cs;
  const int64_t* off;
  wide::Wide wide;
  int64_t npix;  // pixels to compute: up to the last real one
};

// Every (pixel chunk, block row) of one source holding images [b0, b0 +
// src.wide.nb) (orphaned omp for). Items: (group, pixel chunk, block-row
// chunk), rows split only as far as needed to give every thread work; a pixel
// chunk keeps the group's input rows over it in L2 while its rows sweep it.
template <typename T>
void fwd_sweep(const ConvGeometry& geo, const Block1xN& bk, const T* values, const T* bias,
               const FwdSource<T>& src, int64_t chunk, int64_t b0, T* tmp,
               std::vector<int64_t>& dst, T* output, int num_threads) {
  const int64_t ohw = geo.out_h * geo.out_w, cin_g = geo.cin_per_group();
  const int taps = geo.taps();
  // Near-equal chunks of whole widest tiles but the last, which is no
  // shorter than a vector unless the whole range is (fwd_lanes moves its
  // tail back).
  constexpr int L = lanes<T>();
  int64_t nchunks = (src.npix + chunk - 1) / chunk;
  chunk = round_up((src.npix + nchunks - 1) / nchunks, fwd_vectors(kFwdMaxJ) * L);
  nchunks = (src.npix + chunk - 1) / chunk;
  if (nchunks > 1 && src.npix - (nchunks - 1) * chunk < L) --nchunks;
  const int64_t coarse = geo.groups * nchunks;
  const int64_t row_chunks = std::min<int64_t>(
      bk.rows_per_group, std::max<int64_t>(1, (4 * num_threads + coarse - 1) / coarse));
  const int64_t rows_per_chunk = (bk.rows_per_group + row_chunks - 1) / row_chunks;
#pragma omp for schedule(dynamic, 1)
  for (int64_t item = 0; item < coarse * row_chunks; ++item) {
    const int64_t rc = item % row_chunks, pc = item / row_chunks % nchunks;
    const int64_t g = item / row_chunks / nchunks;
    const int64_t q0 = pc * chunk, q1 = pc == nchunks - 1 ? src.npix : q0 + chunk;
    const int64_t r0 = g * bk.rows_per_group + rc * rows_per_chunk;
    const int64_t r1 = std::min(r0 + rows_per_chunk, (g + 1) * bk.rows_per_group);
    fwd_store_map<L>(src.wide, q0, q1, geo.cout * ohw, dst);
    for (int64_t r = r0; r < r1; ++r) {
      const int valid = block_row_valid(geo, bk, r);
      const int64_t o0 = block_row_first_out(geo, bk, r);
      const int32_t k0 = bk.row_ptr[r];
      FwdTile<T> a{src.x + g * cin_g * src.cs, src.cs, src.off, taps, bk.col_idx + k0,
                   values + int64_t(k0) * taps * bk.n, bk.row_ptr[r + 1] - k0, bk.n};
      for (int j0 = 0; j0 < valid; j0 += kFwdMaxJ, a.w += kFwdMaxJ) {
        const T* init = bias ? bias + o0 + j0 : nullptr;
        T* out = output + b0 * geo.cout * ohw + (o0 + j0) * ohw;
        with_count<kFwdMaxJ>(std::min(kFwdMaxJ, valid - j0), [&](auto J) {
          fwd_lanes<T, decltype(J)::value>(a, src.wide, q0, q1, dst.data(), init, tmp, out,
                                           ohw, geo.cout * ohw);
        });
      }
    }
  }
}

// A 1x1, stride-1, unpadded conv over rows stored back to back reads each
// image in place: its planes already are the wide layout (no copy, which
// would cost as much memory traffic as the conv itself).
inline bool reads_in_place(const ConvGeometry& geo, Strides4 s, int lanes) {
  return geo.kh == 1 && geo.kw == 1 && geo.stride_h == 1 && geo.stride_w == 1 &&
         geo.pad_h == 0 && geo.pad_w == 0 && s.w == 1 && (s.h == geo.in_w || geo.in_h == 1) &&
         geo.in_h * geo.in_w >= lanes;
}

template <typename T>
void forward(const ConvGeometry& geo, const Block1xN& bk, const T* values,
             const T* input, Strides4 in_s, const T* bias, T* output,
             int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>();
  const int64_t ohw = geo.out_h * geo.out_w;
  if (geo.batch == 0 || ohw == 0 || geo.cout == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t cin_g = geo.cin_per_group();
  constexpr int64_t kTileMin = fwd_vectors(kFwdMaxJ) * L;

  if (reads_in_place(geo, in_s, L)) {
    static const int64_t kNoTap = 0;
    FwdSource<T> src{nullptr, in_s.c, &kNoTap, Wide{}, ohw};
    src.wide.ww = src.wide.vw = geo.in_w;
    src.wide.rh = src.wide.vh = geo.in_h;
    src.wide.nb = 1;
    const int64_t chunk = chunk_pixels(cin_g, 0, sizeof(T), kTileMin, ohw);
#pragma omp parallel num_threads(num_threads)
    {
      T* const tmp = scratch_array<T>(kTileSlot, kFwdMaxJ * kFwdMaxTile * L);
      std::vector<int64_t> dst;
      for (int64_t b = 0; b < geo.batch; ++b) {
        FwdSource<T> img = src;
        img.x = input + b * in_s.n;
        fwd_sweep(geo, bk, values, bias, img, chunk, b, tmp, dst, output, num_threads);
      }
    }
    return;
  }

  InputSource<T> src(geo, kFwdMaxTile * L);
  const std::vector<char> read = channels_read(geo, bk);
  const int64_t chunk =
      chunk_pixels(src.phases * cin_g, src.span, sizeof(T), kTileMin, src.wide.npix);
#pragma omp parallel num_threads(num_threads)
  {
    T* const tmp = scratch_array<T>(kTileSlot, kFwdMaxJ * kFwdMaxTile * L);
    std::vector<int64_t> dst;
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(input, in_s, b0, nb, &read);
      const Wide wide = src.layout(nb);
      // Up to the last real pixel (wide.npix is rounded up to the tile).
      const int64_t npix = ((nb - 1) * wide.rh + wide.vh - 1) * wide.ww + wide.vw;
      fwd_sweep(geo, bk, values, bias, FwdSource<T>{src.buf, src.cs, src.off.data(), wide, npix},
                chunk, b0, tmp, dst, output, num_threads);
    }
  }
}

// ---------------------------------------------------------------------------
// Grad input: transposed conv, one (image, input channel) plane per task.
// ---------------------------------------------------------------------------

// A block as grad-input reads it: its grad_out rows and its weights.
template <typename T>
struct GiBlock {
  const T* go;  // grad_out rows of the block's first output channel
  const T* w;   // [taps][n]
  int nj;       // output channels actually covered
};

// One run of one grad_input plane (see GradInputLayout), as gi_tile reads it.
template <typename T>
struct GiRun {
  const GiBlock<T>* blocks;  // the channel's blocks, go at this run's pixels
  int64_t nblocks;
  int64_t go_cs;             // grad_out channel stride
  int n;                     // block height N: weight stride of one tap
  const int* tap_order;      // processing order of the taps
  int taps;
  const int64_t* dst_off;    // this run's dx offset per position in tap_order
  int64_t step;              // dx distance between consecutive run pixels
  T* dx;                     // padded grad_input plane
};

// For pixels [i, i + U*L) of one run and the taps at positions
// [t0, t0 + TB) of tap_order (tap t = tap_order[position]):
//   dx[dst_off[position] + k * step] += sum over blocks, j of w[t][j] * go_j[k].
// A TB x U register tile that stays in registers over all blocks of the
// channel (the contraction is only N long per block): each grad_out vector
// loaded serves TB taps, each broadcast weight U vectors.
template <typename T, int U, int TB>
inline void gi_tile(const GiRun<T>& run, int t0, int64_t i) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  int64_t w_off[TB];
  for (int t = 0; t < TB; ++t) w_off[t] = run.tap_order[t0 + t] * run.n;
  V acc[TB][U];
  for (int t = 0; t < TB; ++t)
    for (int u = 0; u < U; ++u) acc[t][u] = V{};
  for (int64_t k = 0; k < run.nblocks; ++k) {
    const GiBlock<T>& b = run.blocks[k];
    for (int j = 0; j < b.nj; ++j) {
      const T* gj = b.go + j * run.go_cs + i;
      V go_v[U];
      for (int u = 0; u < U; ++u) go_v[u] = vload<V>(gj + u * L);
      for (int t = 0; t < TB; ++t) {
        const V s = vbcast<V>(b.w[w_off[t] + j]);
        for (int u = 0; u < U; ++u) acc[t][u] = vfma(s, go_v[u], acc[t][u]);
      }
    }
  }
  for (int t = 0; t < TB; ++t) {
    T* d = run.dx + run.dst_off[t0 + t] + i * run.step;
    if (run.step == 1) {
      for (int u = 0; u < U; ++u) vstore(d + u * L, vload<V>(d + u * L) + acc[t][u]);
    } else {
      for (int u = 0; u < U; ++u)
        for (int l = 0; l < L; ++l) d[(u * L + l) * run.step] += acc[t][u][l];
    }
  }
}

// All taps for pixels [i, i + U*L): tiles of 3 taps, then single taps.
template <typename T, int U>
inline void gi_chunk(const GiRun<T>& run, int64_t i) {
  int t = 0;
  for (; t + 3 <= run.taps; t += 3) gi_tile<T, U, 3>(run, t, i);
  for (; t < run.taps; ++t) gi_tile<T, U, 1>(run, t, i);
}

// One grad_input plane: every block that reads input channel ci, scattered
// through the transposed taps. `blocks` is scratch for the channel's blocks.
template <typename T>
void gi_plane(const ConvGeometry& geo, const Block1xN& bk, const ColumnBlocks& cols,
              const GradInputLayout& lay, const T* values, const T* go_img, int64_t ci,
              std::vector<GiBlock<T>>& blocks, T* dx, T* out) {
  constexpr int L = lanes<T>();
  constexpr int U = 3;  // 3 taps x 3 vectors + 3 loads + 1 broadcast <= 16 regs
  const int taps = geo.taps();
  if (cols.ptr[ci] == cols.ptr[ci + 1]) {  // nothing reads this channel
    std::fill(out, out + geo.in_h * geo.in_w, T(0));
    return;
  }
  std::fill(dx, dx + lay.dx_size, T(0));
  blocks.clear();
  for (int64_t k = cols.ptr[ci]; k < cols.ptr[ci + 1]; ++k) {
    const int64_t r = cols.row[k];
    blocks.push_back({go_img + block_row_first_out(geo, bk, r) * lay.go_cs,
                      values + cols.block[k] * taps * bk.n, block_row_valid(geo, bk, r)});
  }
  GiRun<T> run{blocks.data(), static_cast<int64_t>(blocks.size()), lay.go_cs, bk.n,
               lay.tap_order.data(), taps, lay.dst_off.data(), lay.dst_step, dx};
  for (int64_t r = 0; r < lay.runs; ++r, run.dst_off += taps) {
    if (r)  // on to this run's grad_out pixels
      for (GiBlock<T>& b : blocks) b.go += lay.run_len;
    // Chunks of U vectors, then the tail (a multiple of L) by 2 and 1.
    int64_t i = 0;
    for (; i + U * L <= lay.run_len; i += U * L) gi_chunk<T, U>(run, i);
    for (; i + 2 * L <= lay.run_len; i += 2 * L) gi_chunk<T, 2>(run, i);
    for (; i < lay.run_len; i += L) gi_chunk<T, 1>(run, i);
  }
  lay.store_plane(geo, dx, out);
}

template <typename T>
void grad_input(const ConvGeometry& geo, const Block1xN& bk, const T* values,
                const T* grad_out, Strides4 go_s, T* grad_input,
                int num_threads) {
  const int64_t hw = geo.in_h * geo.in_w;
  if (geo.batch == 0 || hw == 0 || geo.cin == 0) return;
  const GradInputLayout lay(geo, lanes<T>());
  const ColumnBlocks cols(geo, bk);
  const int64_t group = images_per_group(geo.cout * lay.go_cs * sizeof(T), geo.batch);
  std::unique_ptr<T[]> go_rows(new T[group * geo.cout * lay.go_cs]);

#pragma omp parallel num_threads(num_threads)
  {
    std::unique_ptr<T[]> dx(new T[lay.dx_size]);
    std::vector<GiBlock<T>> blocks;
    for (int64_t b0 = 0; b0 < geo.batch; b0 += group) {
      const int64_t nb = std::min(group, geo.batch - b0);
      copy_grad_out_rows(geo, grad_out + b0 * go_s.n, go_s, nb, lay, go_rows.get());
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < nb * geo.cin; ++i) {
        const int64_t b = i / geo.cin, ci = i % geo.cin;
        gi_plane(geo, bk, cols, lay, values, go_rows.get() + b * geo.cout * lay.go_cs, ci,
                 blocks, dx.get(), grad_input + ((b0 + b) * geo.cin + ci) * hw);
      }
    }
  }
}

// ---------------------------------------------------------------------------
// Grad weight: per kept block (row r, input channel c) and tap t,
//   dW[t][j] = sum over wide pixels q of G[o0 + j][q] * X[c][q + off[t]],
// over the wide input (InputSource) and grad_out in the same layout
// (WideGradOut, zero at pixels that are not real). Register tiles of J
// channels x T taps, pixel vectors summed lane-wise and reduced once per
// pixel chunk. Each thread owns whole block rows: no cross-thread reduction,
// and the summation order does not depend on the thread count.
// ---------------------------------------------------------------------------

// Channels x taps per grad-weight tile: J*T accumulators, J grad_out vectors
// and one input vector (AVX-512: 4 x 6; AVX2 and SSE: 2 x 5).
constexpr int kGwJ = kVecRegs / 8;
constexpr int kGwT = (kVecRegs - 2) / kGwJ - 1;

// acc[j][t] (lane-wise) += G[j][q] * X_t[q] over pixel vectors [q0, q1),
// then dw_t[j] += the lane sums. X_t: an input row shifted by one tap (a
// block's taps), or one block's input row each (1x1 convs: a row's blocks).
template <typename T, int J, int TB>
inline void gw_tile(const T* const* g, const T* const* x, int64_t q0, int64_t q1,
                    T* const* dw) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[J][TB];
  for (int j = 0; j < J; ++j)
    for (int t = 0; t < TB; ++t) acc[j][t] = V{};
  for (int64_t q = q0; q < q1; q += L) {
    V gv[J];
#pragma GCC unroll 8
    for (int j = 0; j < J; ++j) gv[j] = vload<V>(g[j] + q);
#pragma GCC unroll 8
    for (int t = 0; t < TB; ++t) {
      const V xv = vload<V>(x[t] + q);
#pragma GCC unroll 8
      for (int j = 0; j < J; ++j) acc[j][t] = vfma(gv[j], xv, acc[j][t]);
    }
  }
  for (int j = 0; j < J; ++j)
    for (int t = 0; t < TB; ++t) dw[t][j] += vsum(acc[j][t]);
}

// gw_tile over lanes [j0, j0 + nj) and `nt` input rows x[] / outputs dw[].
template <typename T>
inline void gw_tiles(const T* const* g, int nj, const T* const* x, T* const* dw, int nt,
                     int64_t q0, int64_t q1) {
  with_count<kGwJ>(nj, [&](auto J) {
    with_count<kGwT>(nt, [&](auto TB) {
      gw_tile<T, decltype(J)::value, decltype(TB)::value>(g, x, q0, q1, dw);
    });
  });
}

template <typename T>
void grad_weight(const ConvGeometry& geo, const Block1xN& bk, const T* input,
                 Strides4 in_s, const T* grad_out, Strides4 go_s,
                 T* grad_values, int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>();
  const int taps = geo.taps();
  // Zero first: padded lanes of short rows are never written again.
  std::fill(grad_values, grad_values + bk.nnzb * taps * bk.n, T(0));
  if (geo.batch == 0 || geo.out_h * geo.out_w == 0 || bk.nnzb == 0) return;
  num_threads = std::max(num_threads, 1);
  const int64_t cin_g = geo.cin_per_group(), nrows = geo.groups * bk.rows_per_group;
  InputSource<T> src(geo, L);
  WideGradOut<T> gout(geo, src.wide, src.group);
  const std::vector<char> read = channels_read(geo, bk);
  // Pixel chunks whose input rows (+ the taps' span) stay in L1 across the
  // tiles of a block.
  const int64_t chunk = std::max<int64_t>(
      L, round_up(std::min<int64_t>(2048, (16 << 10) / int64_t(sizeof(T))) - src.span, L));

#pragma omp parallel num_threads(num_threads)
  {
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(input, in_s, b0, nb, &read);
      const Wide wide = src.layout(nb);
      gout.build(grad_out, go_s, b0, wide);
#pragma omp for schedule(dynamic, 1)
      for (int64_t r = 0; r < nrows; ++r) {
        const int valid = block_row_valid(geo, bk, r);
        const int64_t o0 = block_row_first_out(geo, bk, r);
        const T* x_g = src.buf + (r / bk.rows_per_group) * cin_g * src.cs;
        for (int64_t q0 = 0; q0 < wide.npix; q0 += chunk) {
          const int64_t q1 = std::min(wide.npix, q0 + chunk);
          for (int j0 = 0; j0 < valid; j0 += kGwJ) {
            const T* g[kGwJ];
            const int nj = std::min(kGwJ, valid - j0);
            for (int j = 0; j < kGwJ; ++j)
              g[j] = gout.buf + (o0 + j0 + std::min(j, nj - 1)) * gout.cs;
            const T* x[kGwT];
            T* dw[kGwT];
            if (taps == 1) {  // a tile of the row's blocks
              for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; k += kGwT) {
                const int nt = std::min<int>(kGwT, bk.row_ptr[r + 1] - k);
                for (int t = 0; t < nt; ++t) {
                  x[t] = x_g + bk.col_idx[k + t] * src.cs + src.off[0];
                  dw[t] = grad_values + int64_t(k + t) * bk.n + j0;
                }
                gw_tiles(g, nj, x, dw, nt, q0, q1);
              }
              continue;
            }
            for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k) {  // a block's taps
              const T* xk = x_g + bk.col_idx[k] * src.cs;
              for (int t0 = 0; t0 < taps; t0 += kGwT) {
                const int nt = std::min(kGwT, taps - t0);
                for (int t = 0; t < nt; ++t) {
                  x[t] = xk + src.off[t0 + t];
                  dw[t] = grad_values + (int64_t(k) * taps + t0 + t) * bk.n + j0;
                }
                gw_tiles(g, nj, x, dw, nt, q0, q1);
              }
            }
          }
        }
      }
    }
  }
}
