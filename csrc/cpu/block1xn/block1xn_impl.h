// Kernel bodies of the CPU 1xN block conv, written once over a GCC vector
// type. block1xn_cpu.cpp has cpu/common/for_each_isa.inc include this file
// once per instruction set (deliberately no include guard), in its own
// namespace and `#pragma GCC target` region, after the SIMD primitives of
// cpu/common/simd.h and the ISA constants that file lists; the std headers,
// cpu/common/conv_layout.h and block1xn_plans.h are included before.

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// Output pixels per tile when a tile holds `nv` weight vectors per pixel.
constexpr int fwd_pixels(int nv) { return std::clamp(kAccRegs / nv, 1, kMaxPix); }
// Weight vectors per pixel handled by one micro-kernel call (wider N is cut
// into chunks of at most this many vectors).
constexpr int kMaxNv = 4;

template <typename T>
struct FwdArgs {
  const ConvGeometry* geo;
  const Block1xN* blocks;
  const T* w;              // weights, [nnzb][taps][w_ld]
  int64_t w_ld;            // N rounded up to the vector width
  const T* x;              // input band: group channel c at x + c * x_cs
  int64_t x_cs;
  const int64_t* tap_off;  // input offset of each (kh, kw), relative to a pixel
  const int64_t* pix_off;  // input offset of each strip pixel (flattened)
  const T* bias;           // may be null
  T* out;                  // output channel 0 at the strip's first pixel
};

// Accumulates the register tile acc[P pixels][NV vectors] over every kept
// block of row r and every tap: acc[p] += x[pixel p shifted by tap] * w[tap].
// The input scalar is broadcast; the weight vectors are loaded once per tap
// and reused by all P pixels (an outer-product sgemm micro-kernel).
template <typename T, int NV, int P>
inline void fwd_accumulate(const FwdArgs<T>& a, int64_t r, int64_t j0,
                           const int64_t* off, typename Vec<T>::type (&acc)[P][NV]) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  const Block1xN& bk = *a.blocks;
  const int taps = a.geo->taps();
  // One base pointer per pixel and one shared index per (block, tap): each
  // broadcast is then a single base + index * scale load.
  const T* xp[P];
  for (int p = 0; p < P; ++p) xp[p] = a.x + off[p];
  for (int32_t kb = bk.row_ptr[r]; kb < bk.row_ptr[r + 1]; ++kb) {
    const int64_t xc = bk.col_idx[kb] * a.x_cs;
    const T* wk = a.w + static_cast<int64_t>(kb) * taps * a.w_ld + j0;
    for (int t = 0; t < taps; ++t) {
      const int64_t xt = xc + a.tap_off[t];
      V wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = vload<V>(wk + t * a.w_ld + v * L);
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        const V s = vbcast<V>(xp[p][xt]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[p][v] = vfma(s, wv[v], acc[p][v]);
      }
    }
  }
}

// Stores the tile acc[pixel][vector] into the channel-major output (channel
// c of pixel p at out[c * ohw + p]): L x L blocks are transposed in registers
// and stored as whole vectors. A vector may run past the tile's np pixels
// into pixels of later tiles of the same strip, which this thread writes
// afterwards; only near the strip end (`room` pixels left) are lanes stored
// one by one.
template <typename T, int NV, int P>
inline void fwd_store(typename Vec<T>::type (&acc)[P][NV], int nlanes, int np, int64_t room,
                      int64_t ohw, T* out) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  for (int v = 0; v < NV; ++v) {
    const int nc = std::min(L, nlanes - v * L);
    for (int p0 = 0; p0 < P; p0 += L) {
      if (p0 >= np) break;
      V blk[L];
      for (int i = 0; i < L; ++i) blk[i] = acc[std::min(p0 + i, P - 1)][v];
      transpose(blk);  // blk[c]: channel v*L + c over pixels p0 .. p0 + L
      T* o = out + v * L * ohw + p0;
      if (p0 + L <= room) {
        for (int c = 0; c < nc; ++c) vstore(o + c * ohw, blk[c]);
      } else {
        const int n = std::min(L, np - p0);
        for (int c = 0; c < nc; ++c)
          for (int i = 0; i < n; ++i) o[c * ohw + i] = blk[c][i];
      }
    }
  }
}

// One tile: `np` (<= P) consecutive strip pixels from `pix0` (of `npix`),
// lanes [j0, j0 + nlanes) of block row r. Missing pixels of a short tile
// repeat the last one so the kernel never branches; they are not stored.
template <typename T, int NV>
void fwd_tile(const FwdArgs<T>& a, int64_t r, int64_t j0, int nlanes,
              int64_t pix0, int np, int64_t npix) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  constexpr int P = fwd_pixels(NV);
  const ConvGeometry& geo = *a.geo;
  const int64_t ohw = geo.out_h * geo.out_w;
  const int64_t o0 = block_row_first_out(geo, *a.blocks, r) + j0;

  alignas(64) T bias[NV * L] = {};
  if (a.bias)
    for (int j = 0; j < nlanes; ++j) bias[j] = a.bias[o0 + j];
  V acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = vload<V>(bias + v * L);

  int64_t off[P];
  for (int p = 0; p < P; ++p) off[p] = a.pix_off[pix0 + (p < np ? p : np - 1)];
  fwd_accumulate<T, NV, P>(a, r, j0, off, acc);
  fwd_store<T, NV, P>(acc, nlanes, np, npix - pix0, ohw, a.out + o0 * ohw + pix0);
}

// Every tile of the strip's `npix` pixels for block row r, lanes
// [j0, j0 + nlanes) with NV vectors.
template <typename T, int NV>
void fwd_tiles(const FwdArgs<T>& a, int64_t r, int64_t j0, int nlanes, int64_t npix) {
  constexpr int P = fwd_pixels(NV);
  for (int64_t p = 0; p < npix; p += P)
    fwd_tile<T, NV>(a, r, j0, nlanes, p, static_cast<int>(std::min<int64_t>(P, npix - p)), npix);
}

// Every tile of the strip's `npix` pixels for block row r, all its lanes.
template <typename T>
void fwd_row(const FwdArgs<T>& a, int64_t r, int64_t npix) {
  constexpr int L = lanes<T>();
  const int valid = block_row_valid(*a.geo, *a.blocks, r);
  for (int j0 = 0; j0 < valid; j0 += kMaxNv * L) {
    const int nlanes = std::min(valid - j0, kMaxNv * L);
    switch ((nlanes + L - 1) / L) {  // vectors needed, 1 .. kMaxNv
      case 1: fwd_tiles<T, 1>(a, r, j0, nlanes, npix); break;
      case 2: fwd_tiles<T, 2>(a, r, j0, nlanes, npix); break;
      case 3: fwd_tiles<T, 3>(a, r, j0, nlanes, npix); break;
      case 4: fwd_tiles<T, 4>(a, r, j0, nlanes, npix); break;
    }
  }
}

template <typename T>
void forward(const ConvGeometry& geo, const Block1xN& bk, const T* values,
             const T* input, Strides4 in_s, const T* bias, T* output,
             int num_threads) {
  const int64_t ohw = geo.out_h * geo.out_w;
  if (geo.batch == 0 || ohw == 0 || geo.cout == 0) return;
  const FwdPlan plan(geo, bk, in_s, sizeof(T), num_threads);
  const PackedWeights<T> wp(geo, bk, values, lanes<T>());

#pragma omp parallel num_threads(num_threads)
  {
    InputBand<T> band(geo, plan, input, in_s);
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < plan.items; ++i) {
      const FwdPlan::Item it = plan.item(geo, bk, i);
      const int64_t oh0 = it.strip * plan.strip_rows;
      const int64_t npix = (std::min(geo.out_h, oh0 + plan.strip_rows) - oh0) * geo.out_w;
      const FwdArgs<T> a{&geo, &bk, wp.data, wp.ld, band.get(it, bk),
                         plan.chan_stride, plan.tap_off.data(), plan.pix_off.data(), bias,
                         output + it.b * geo.cout * ohw + oh0 * geo.out_w};
      for (int64_t r = it.row0; r < it.row1; ++r) fwd_row(a, r, npix);
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
// Grad weight: per kept block a (taps x N) = (taps x K) * (K x N) product over
// K = all output pixels of all images.
// ---------------------------------------------------------------------------

constexpr int kGwJ = 4;  // output channels per register tile
constexpr int kGwT = 3;  // taps per register tile

// Pixels per K chunk: a chunk's grad_out rows (N of them) and im2col rows
// (taps) stay in L1 while every register tile of the block passes over them.
constexpr int64_t kGwChunk = 256;

// `nimg` images of one input channel: their grad_out and im2col planes.
template <typename T>
struct GwSpan {
  const T* go;             // grad_out of the first image, channel 0
  int64_t go_cs, go_is;    // channel and image strides
  const T* col;            // im2col of the first image, [taps][col_ld]
  int64_t col_ld, col_is;  // tap and image strides
  int64_t nimg, k_len;     // images, pixels per image
};

// acc[j][t] += sum over pixels [k0, k1) of go[j][k] * col[t][k], for a
// kGwJ x kGwT tile given by row pointers; acc holds kGwJ * kGwT vectors as
// scalars. Lanes are summed at the very end, so a pixel tail (k1 - k0 not a
// multiple of the width) goes into lane 0.
template <typename T>
inline void gw_tile(const T* const (&go)[kGwJ], const T* const (&col)[kGwT], int64_t k0,
                    int64_t k1, T* acc) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V a[kGwJ][kGwT];
  for (int j = 0; j < kGwJ; ++j)
    for (int t = 0; t < kGwT; ++t) a[j][t] = vload<V>(acc + (j * kGwT + t) * L);
  int64_t k = k0;
  for (; k + L <= k1; k += L) {
    V gj[kGwJ], ct[kGwT];
    for (int j = 0; j < kGwJ; ++j) gj[j] = vload<V>(go[j] + k);
    for (int t = 0; t < kGwT; ++t) ct[t] = vload<V>(col[t] + k);
    for (int j = 0; j < kGwJ; ++j)
      for (int t = 0; t < kGwT; ++t) a[j][t] = vfma(gj[j], ct[t], a[j][t]);
  }
  for (; k < k1; ++k)
    for (int j = 0; j < kGwJ; ++j)
      for (int t = 0; t < kGwT; ++t) a[j][t][0] += go[j][k] * col[t][k];
  for (int j = 0; j < kGwJ; ++j)
    for (int t = 0; t < kGwT; ++t) vstore(acc + (j * kGwT + t) * L, a[j][t]);
}

// Accumulator scalars for all kGwJ x kGwT tiles of a block.
template <typename T>
inline int64_t gw_acc_size(int n, int taps) {
  return int64_t(n + kGwJ - 1) / kGwJ * ((taps + kGwT - 1) / kGwT) * kGwJ * kGwT * lanes<T>();
}

// grad_values of one block over the span: tiles of (lanes x taps), K chunked.
// Short tiles repeat a row; only real lanes and taps are stored.
template <typename T>
void gw_block(const ConvGeometry& geo, const Block1xN& bk, int64_t blk, int64_t r,
              const GwSpan<T>& sp, T* acc, T* grad_values) {
  using V = typename Vec<T>::type;
  constexpr int64_t tile_size = kGwJ * kGwT * lanes<T>();
  const int taps = geo.taps();
  const int valid = block_row_valid(geo, bk, r);
  const int64_t o0 = block_row_first_out(geo, bk, r);
  std::fill(acc, acc + gw_acc_size<T>(valid, taps), T(0));

  for (int64_t m = 0; m < sp.nimg; ++m)
    for (int64_t k0 = 0; k0 < sp.k_len; k0 += kGwChunk) {
      const int64_t k1 = std::min(sp.k_len, k0 + kGwChunk);
      int i = 0;
      for (int j0 = 0; j0 < valid; j0 += kGwJ) {
        const T* go[kGwJ];
        for (int j = 0; j < kGwJ; ++j)
          go[j] = sp.go + m * sp.go_is + (o0 + std::min(j0 + j, valid - 1)) * sp.go_cs;
        for (int t0 = 0; t0 < taps; t0 += kGwT, ++i) {
          const T* col[kGwT];
          for (int t = 0; t < kGwT; ++t)
            col[t] = sp.col + m * sp.col_is + std::min(t0 + t, taps - 1) * sp.col_ld;
          gw_tile<T>(go, col, k0, k1, acc + i * tile_size);
        }
      }
    }

  T* gv = grad_values + blk * taps * bk.n;
  int i = 0;
  for (int j0 = 0; j0 < valid; j0 += kGwJ)
    for (int t0 = 0; t0 < taps; t0 += kGwT, ++i)
      for (int j = 0; j < std::min(kGwJ, valid - j0); ++j)
        for (int t = 0; t < std::min(kGwT, taps - t0); ++t)
          gv[(t0 + t) * bk.n + j0 + j] +=
              vsum(vload<V>(acc + i * tile_size + (j * kGwT + t) * lanes<T>()));
}

template <typename T>
void grad_weight(const ConvGeometry& geo, const Block1xN& bk, const T* input,
                 Strides4 in_s, const T* grad_out, Strides4 go_s,
                 T* grad_values, int num_threads) {
  const int taps = geo.taps();
  const int64_t ohw = geo.out_h * geo.out_w;
  // Zero first: padded lanes of short rows are never written again.
  std::fill(grad_values, grad_values + bk.nnzb * taps * bk.n, T(0));
  if (geo.batch == 0 || ohw == 0 || bk.nnzb == 0) return;
  const ColumnBlocks cols(geo, bk);
  const int64_t col_ld = round_up(ohw, lanes<T>());
  // Images per im2col buffer: up to ~1 MiB of planes, so the register tiles
  // of small images run over several images before their horizontal sums.
  const int64_t col_imgs = std::max<int64_t>(1, (int64_t(1) << 20) / (taps * col_ld * int64_t(sizeof(T))));
  GradOutRows<T> go(geo, grad_out, go_s);

#pragma omp parallel num_threads(num_threads)
  {
    std::unique_ptr<T[]> col(new T[std::min(col_imgs, go.group) * taps * col_ld]);
    std::unique_ptr<T[]> acc(new T[gw_acc_size<T>(bk.n, taps)]);
    for (int64_t b0 = 0; b0 < geo.batch; b0 += go.group) {
      const int64_t nb = std::min(go.group, geo.batch - b0);
      go.load(b0, nb);
      // One task per input channel: it owns every block reading that channel,
      // so the sum over images needs no atomics.
#pragma omp for schedule(dynamic, 1)
      for (int64_t ci = 0; ci < geo.cin; ++ci) {
        if (cols.ptr[ci] == cols.ptr[ci + 1]) continue;
        for (int64_t m0 = 0; m0 < nb; m0 += col_imgs) {
          const int64_t nm = std::min(col_imgs, nb - m0);
          for (int64_t m = 0; m < nm; ++m)
            im2col_plane(geo, input + (b0 + m0 + m) * in_s.n + ci * in_s.c, in_s,
                         col.get() + m * taps * col_ld, col_ld);
          const GwSpan<T> sp{go.image(m0), go.chan_stride, go.img_stride, col.get(),
                             col_ld, taps * col_ld, nm, ohw};
          for (int64_t k = cols.ptr[ci]; k < cols.ptr[ci + 1]; ++k)
            gw_block(geo, bk, cols.block[k], cols.row[k], sp, acc.get(), grad_values);
        }
      }
    }
  }
}
