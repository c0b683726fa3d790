// Kernel bodies of the CPU 1xN block conv, written once over a GCC vector
// type and compiled once per instruction set. block_conv_cpu.cpp includes this
// file several times (deliberately no include guard), each time inside its own
// namespace and `#pragma GCC target` region, after defining there:
//   kVecBytes  SIMD register width in bytes (16 / 32 / 64)
//   kAccRegs   accumulator registers the forward micro-kernel may use
//   kMaxPix    most output pixels per forward tile (bounded by the general
//              purpose registers that hold their input offsets)
//   vfma(a, b, c) = a * b + c on the vector type (fused where the ISA has it)
// plus the std headers and the helpers of block_conv_cpu_common.h.

template <typename T>
struct Vec;
template <>
struct Vec<float> {
  typedef float type __attribute__((vector_size(kVecBytes)));
};
template <>
struct Vec<double> {
  typedef double type __attribute__((vector_size(kVecBytes)));
};

template <typename T>
constexpr int lanes() {
  return kVecBytes / static_cast<int>(sizeof(T));
}

// Unaligned loads and stores; memcpy compiles to a single vmovu*.
template <typename V, typename T>
inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void vstore(T* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}
template <typename V, typename T>
inline V vbcast(T s) {
  V v;
  for (int i = 0; i < static_cast<int>(sizeof(V) / sizeof(T)); ++i) v[i] = s;
  return v;
}
template <typename V>
inline auto vsum(V v) -> typename std::remove_reference<decltype(v[0])>::type {
  auto s = v[0];
  for (int i = 1; i < static_cast<int>(sizeof(V) / sizeof(v[0])); ++i) s += v[i];
  return s;
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// Output pixels per tile when a tile holds `nv` weight vectors per pixel.
constexpr int fwd_pixels(int nv) {
  return kAccRegs / nv < kMaxPix ? (kAccRegs / nv < 1 ? 1 : kAccRegs / nv)
                                 : kMaxPix;
}
// Weight vectors per pixel handled by one micro-kernel call (wider N is cut
// into chunks of at most this many vectors).
constexpr int kMaxNv = 4;

template <typename T>
struct FwdArgs {
  const ConvGeometry* geo;
  const Block1xN* blocks;
  const T* w;         // weights, [nnzb][taps][w_ld], lanes >= n are zero
  int64_t w_ld;       // N rounded up to the vector width
  const T* x;         // input of one image: channel c at x + c * x_cs
  int64_t x_cs;
  const int64_t* tap_off;  // input offset of each (kh, kw), relative to a pixel
  const int64_t* pix_off;  // input offset of each output pixel (flattened)
  const T* bias;           // may be null
  T* out;                  // output of one image, NCHW
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
  const int64_t cin0 = (r / bk.rows_per_group) * a.geo->cin_per_group();
  int64_t o[P];
  for (int p = 0; p < P; ++p) o[p] = off[p];
  for (int32_t kb = bk.row_ptr[r]; kb < bk.row_ptr[r + 1]; ++kb) {
    const T* xc = a.x + (cin0 + bk.col_idx[kb]) * a.x_cs;
    const T* wk = a.w + static_cast<int64_t>(kb) * taps * a.w_ld + j0;
    for (int t = 0; t < taps; ++t) {
      const T* xt = xc + a.tap_off[t];
      V wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = vload<V>(wk + t * a.w_ld + v * L);
#pragma GCC unroll 16
      for (int p = 0; p < P; ++p) {
        const V s = vbcast<V>(xt[o[p]]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[p][v] = vfma(s, wv[v], acc[p][v]);
      }
    }
  }
}

// One tile: `np` (<= P) consecutive output pixels starting at flattened pixel
// `pix0`, lanes [j0, j0 + nlanes) of block row r. Missing pixels of a short
// tile repeat the last one so the kernel never branches; they are not stored.
template <typename T, int NV>
void fwd_tile(const FwdArgs<T>& a, int64_t r, int64_t j0, int nlanes,
              int64_t pix0, int np) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  constexpr int P = fwd_pixels(NV);
  const ConvGeometry& g = *a.geo;
  const int64_t ohw = g.out_h * g.out_w;
  const int64_t o0 = block_row_first_out(g, *a.blocks, r) + j0;

  alignas(64) T bias[NV * L] = {};
  if (a.bias)
    for (int j = 0; j < nlanes; ++j) bias[j] = a.bias[o0 + j];
  V acc[P][NV];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) acc[p][v] = vload<V>(bias + v * L);

  int64_t off[P];
  for (int p = 0; p < P; ++p) off[p] = a.pix_off[pix0 + (p < np ? p : np - 1)];
  fwd_accumulate<T, NV, P>(a, r, j0, off, acc);

  // Transpose on store: the tile is pixel-major, the output channel-major.
  alignas(64) T tile[P][NV * L];
  for (int p = 0; p < P; ++p)
    for (int v = 0; v < NV; ++v) vstore(&tile[p][v * L], acc[p][v]);
  T* out = a.out + o0 * ohw + pix0;
  for (int j = 0; j < nlanes; ++j)
    for (int p = 0; p < np; ++p) out[j * ohw + p] = tile[p][j];
}

// Every tile of pixels [pix0, pix1) for block row r, all lanes of the row.
template <typename T>
void fwd_strip(const FwdArgs<T>& a, int64_t r, int64_t pix0, int64_t pix1) {
  constexpr int L = lanes<T>();
  const int valid = block_row_valid(*a.geo, *a.blocks, r);
  for (int j0 = 0; j0 < valid; j0 += kMaxNv * L) {
    const int nlanes = std::min(valid - j0, kMaxNv * L);
    const int nv = (nlanes + L - 1) / L;
    switch (nv) {
#define SK_FWD_CASE(NV)                                                      \
  case NV:                                                                   \
    for (int64_t p = pix0; p < pix1; p += fwd_pixels(NV))                    \
      fwd_tile<T, NV>(a, r, j0, nlanes, p,                                   \
                      static_cast<int>(std::min<int64_t>(fwd_pixels(NV), pix1 - p))); \
    break;
      SK_FWD_CASE(1)
      SK_FWD_CASE(2)
      SK_FWD_CASE(3)
      SK_FWD_CASE(4)
#undef SK_FWD_CASE
    }
  }
}

template <typename T>
void forward(const ConvGeometry& g, const Block1xN& bk, const T* values,
             const T* input, Strides4 in_s, const T* bias, T* output,
             int num_threads) {
  constexpr int L = lanes<T>();
  const int64_t ohw = g.out_h * g.out_w;
  const int64_t nrows = g.groups * bk.rows_per_group;
  if (g.batch == 0 || ohw == 0 || g.cout == 0) return;

  const PaddedInput<T> xin(g, input, in_s);
  const PackedWeights<T> wp(g, bk, values, L);
  const std::vector<int64_t> tap_off = tap_offsets(g, xin.row_stride, xin.col_stride);
  const std::vector<int64_t> pix_off = pixel_offsets(g, xin.row_stride, xin.col_stride);

  // Strips of output pixels: enough (strip x row) items to balance the
  // threads, each small enough that its input window stays in L2 while all
  // block rows sweep over it.
  const int64_t want_strips = std::max<int64_t>(1, (8 * num_threads + nrows - 1) / nrows);
  const int64_t p_main = fwd_pixels(std::min<int>(kMaxNv, (bk.n + L - 1) / L));
  const int64_t strip = round_up(
      std::min<int64_t>(512, (ohw + want_strips - 1) / want_strips), p_main);
  const int64_t nstrips = (ohw + strip - 1) / strip;

#pragma omp parallel num_threads(num_threads)
  for (int64_t b = 0; b < g.batch; ++b) {
    const T* x = xin.image(b);  // pads in parallel; ends with a barrier
    FwdArgs<T> a{&g, &bk, wp.data, wp.ld, x, xin.chan_stride, tap_off.data(),
                 pix_off.data(), bias, output + b * g.cout * ohw};
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < nstrips * nrows; ++item) {
      const int64_t s = item / nrows, r = item % nrows;
      fwd_strip(a, r, s * strip, std::min(ohw, (s + 1) * strip));
    }
  }
}

// ---------------------------------------------------------------------------
// Grad input: transposed conv, one (image, input channel) plane per task.
// ---------------------------------------------------------------------------

// dst[i * sw] += sum_j w[j * w_ld] * src_j[i] for one run of `len` (a multiple
// of the vector width) grad_out pixels, where src_j = src + j * src_cs. U
// vectors of pixels are kept in registers over the whole sum over j.
template <typename T, int U>
inline void gi_run(const T* src, int64_t src_cs, const T* w, int64_t w_ld,
                   int nj, T* dst, int64_t len, int sw, int64_t& i) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  for (; i + U * L <= len; i += U * L) {
    V acc[U] = {};
    for (int j = 0; j < nj; ++j) {
      const V s = vbcast<V>(w[j * w_ld]);
      const T* sj = src + j * src_cs + i;
      for (int u = 0; u < U; ++u) acc[u] = vfma(s, vload<V>(sj + u * L), acc[u]);
    }
    if (sw == 1) {
      for (int u = 0; u < U; ++u)
        vstore(dst + i + u * L, vload<V>(dst + i + u * L) + acc[u]);
    } else {
      for (int u = 0; u < U; ++u)
        for (int l = 0; l < L; ++l) dst[(i + u * L + l) * sw] += acc[u][l];
    }
  }
}

template <typename T>
void grad_input(const ConvGeometry& g, const Block1xN& bk, const T* values,
                const T* grad_out, Strides4 go_s, T* grad_input,
                int num_threads) {
  constexpr int L = lanes<T>();
  const int64_t hw = g.in_h * g.in_w;
  if (g.batch == 0 || hw == 0 || g.cin == 0) return;
  const GradInputLayout lay(g, L);
  const int taps = g.taps();
  std::unique_ptr<T[]> go_img(new T[g.cout * lay.go_cs]);

#pragma omp parallel num_threads(num_threads)
  {
    std::unique_ptr<T[]> dx(new T[lay.dx_size]);
    for (int64_t b = 0; b < g.batch; ++b) {
      copy_grad_out_rows(g, grad_out + b * go_s.n, go_s, lay, go_img.get());
#pragma omp for schedule(dynamic, 1)
      for (int64_t ci = 0; ci < g.cin; ++ci) {
        std::fill(dx.get(), dx.get() + lay.dx_size, T(0));
        for (int32_t k = bk.col_ptr[ci]; k < bk.col_ptr[ci + 1]; ++k) {
          const int64_t r = bk.block_row[k];
          const int nj = block_row_valid(g, bk, r);
          const T* src0 = go_img.get() + block_row_first_out(g, bk, r) * lay.go_cs;
          const T* wk = values + static_cast<int64_t>(bk.block_idx[k]) * taps * bk.n;
          for (int64_t run = 0; run < lay.runs; ++run) {
            const T* src = src0 + run * lay.run_len;
            for (int t = 0; t < taps; ++t) {
              T* dst = dx.get() + lay.dst_offset(g, run, t);
              int64_t i = 0;
              gi_run<T, 4>(src, lay.go_cs, wk + t * bk.n, 1, nj, dst, lay.run_len, lay.dst_step, i);
              gi_run<T, 1>(src, lay.go_cs, wk + t * bk.n, 1, nj, dst, lay.run_len, lay.dst_step, i);
            }
          }
        }
        lay.store_plane(g, dx.get(), grad_input + (b * g.cin + ci) * hw);
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

// gv[t * n + j] += sum_k go[j][k] * col[t][k] for the kGwJ x kGwT tile given by
// row pointers (short tiles repeat a row; `nj`, `nt` say how many to store).
template <typename T>
void gw_tile(const T* const (&go)[kGwJ], const T* const (&col)[kGwT], int64_t k_len,
             int nj, int nt, T* gv, int n) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[kGwJ][kGwT] = {};
  int64_t k = 0;
  for (; k + L <= k_len; k += L) {
    V gj[kGwJ], ct[kGwT];
    for (int j = 0; j < kGwJ; ++j) gj[j] = vload<V>(go[j] + k);
    for (int t = 0; t < kGwT; ++t) ct[t] = vload<V>(col[t] + k);
    for (int j = 0; j < kGwJ; ++j)
      for (int t = 0; t < kGwT; ++t) acc[j][t] = vfma(gj[j], ct[t], acc[j][t]);
  }
  for (int j = 0; j < nj; ++j)
    for (int t = 0; t < nt; ++t) {
      T s = vsum(acc[j][t]);
      for (int64_t kk = k; kk < k_len; ++kk) s += go[j][kk] * col[t][kk];
      gv[t * n + j] += s;
    }
}

template <typename T>
void gw_block(const ConvGeometry& g, const Block1xN& bk, int64_t blk, int64_t r,
              const T* go_img, int64_t go_cs, const T* col, int64_t col_ld,
              T* grad_values) {
  const int taps = g.taps();
  const int valid = block_row_valid(g, bk, r);
  const int64_t ohw = g.out_h * g.out_w;
  const T* go0 = go_img + block_row_first_out(g, bk, r) * go_cs;
  T* gv = grad_values + blk * taps * bk.n;
  for (int j0 = 0; j0 < valid; j0 += kGwJ) {
    const int nj = std::min(kGwJ, valid - j0);
    const T* go[kGwJ];
    for (int j = 0; j < kGwJ; ++j) go[j] = go0 + (j0 + std::min(j, nj - 1)) * go_cs;
    for (int t0 = 0; t0 < taps; t0 += kGwT) {
      const int nt = std::min(kGwT, taps - t0);
      const T* c[kGwT];
      for (int t = 0; t < kGwT; ++t) c[t] = col + (t0 + std::min(t, nt - 1)) * col_ld;
      gw_tile<T>(go, c, ohw, nj, nt, gv + t0 * bk.n + j0, bk.n);
    }
  }
}

template <typename T>
void grad_weight(const ConvGeometry& g, const Block1xN& bk, const T* input,
                 Strides4 in_s, const T* grad_out, Strides4 go_s,
                 T* grad_values, int num_threads) {
  const int taps = g.taps();
  const int64_t nnzb = bk.nnzb;
  const int64_t ohw = g.out_h * g.out_w;
  std::fill(grad_values, grad_values + nnzb * taps * bk.n, T(0));
  if (g.batch == 0 || ohw == 0 || nnzb == 0) return;

  const GradOutImage<T> go(g, grad_out, go_s);
  const BlockOrder order(g, bk);
  const int64_t col_ld = round_up(ohw, lanes<T>());

#pragma omp parallel num_threads(num_threads)
  {
    std::unique_ptr<T[]> col(new T[taps * col_ld]);
    for (int64_t b = 0; b < g.batch; ++b) {
      const T* go_img = go.image(b);  // copies in parallel if needed; barrier
      int64_t have_chan = -1;
      // Static schedule: each block belongs to the same thread for every
      // image, so accumulating into grad_values needs no atomics.
#pragma omp for schedule(static)
      for (int64_t i = 0; i < nnzb; ++i) {
        const int64_t blk = order.block[i], r = order.row[i];
        const int64_t chan = block_in_channel(g, bk, r, bk.col_idx[blk]);
        if (chan != have_chan) {  // blocks come ordered by input channel
          im2col_plane(g, input + b * in_s.n + chan * in_s.c, in_s, col.get(), col_ld);
          have_chan = chan;
        }
        gw_block(g, bk, blk, r, go_img, go.chan_stride, col.get(), col_ld, grad_values);
      }
    }
  }
}
