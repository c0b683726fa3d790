// Kernel bodies of the CPU window ops, written once over a GCC vector type.
// window_cpu.cpp has cpu/common/for_each_isa.inc include this file once per
// instruction set (deliberately no include guard), in its own namespace and
// `#pragma GCC target` region, after the SIMD primitives of
// cpu/common/simd.h; the std headers, cpu/common/conv_layout.h and
// cpu/common/wide_layout.h are included before.
//
// A depthwise conv on contiguous planes that fit a cache runs with channels
// in the lanes (ChannelLanes below); on larger ones at column stride 2 it
// reads its input in place (Stride2Rows). Otherwise, and for the max pool,
// per (image, channel) plane: the plane is copied once into a padded buffer
// split into the stride's phase planes (padded pixel (r, c) at phase
// (r % sh, c % sw), row r / sh, column c / sw), each wq columns wide. Output
// pixel (oh, ow) is then "wide" pixel q = oh * wq + ow, and every tap reads
// the buffer at q plus a constant offset (as the sparse kinds' wide layouts,
// cpu/common/wide_layout.h). Output rows at least a vector wide are
// stored straight from the registers, a row's vectors starting at its first
// pixel (its last one overhangs into the next row, stored after it); a plane
// of narrower rows (7x7, 14x14) is one run of vectors, with no per-row tail,
// through a wide buffer whose columns ow >= OW are dropped when its rows are
// copied out. The pads (0 for a conv, -inf for a max pool) and the slack are
// written once per call: every plane fills the same places.

// Output vectors per register tile.
constexpr int kWindowVectors = kVecRegs >= 32 ? 8 : 4;

// Input row `row` (in_w elements, `step` apart) into the phase planes of its
// padded row: padded column c = x + pad at phase c % s, column c / s.
template <typename T>
inline void fill_row(const T* row, int64_t step, int64_t in_w, int64_t pad, int s,
                     int64_t phase_stride, T* dst) {
  if (s == 1 && step == 1) {
    wide::copy_row(row, in_w, dst + pad);
  } else if (s == 2 && step == 1) {
    // Input columns 2k and 2k + 1 land at phases pad % 2 and 1 - pad % 2.
    const int64_t p = pad % 2;
    T* even = dst + p * phase_stride + pad / 2;
    T* odd = dst + (1 - p) * phase_stride + (pad + 1) / 2;
    deinterleave2(row, in_w / 2, even, odd);
    if (in_w % 2) even[in_w / 2] = row[in_w - 1];
  } else {
    for (int64_t x = 0; x < in_w; ++x) {
      const int64_t c = x + pad;
      dst[(c % s) * phase_stride + c / s] = row[x * step];
    }
  }
}

// Offset of a tile's vector u: offsets[u], or u vectors (consecutive
// vectors, offsets the compiler folds into the loads and stores).
template <typename T>
inline int64_t at(const int64_t* offsets, int u) { return offsets[u]; }
template <typename T>
inline int64_t at(std::nullptr_t, int u) { return int64_t(u) * lanes<T>(); }

// The phase planes of one geometry, and the per-plane sweep every op shares.
// A tile computes U vectors: vector u at wide pixel at(src, u) of the plane's
// buffer, stored to at(dst, u) of its destination (in increasing u).
template <typename T>
struct PhasePlanes {
  const ConvGeometry& geo;
  int64_t wq = 0, phase_size = 0;
  int64_t nq = 0, nq_vec = 0;  // wide pixels up to the last real one; in whole vectors
  int64_t size = 0;            // of the buffer, with the slack the last vector reads
  std::vector<int64_t> off;    // tap t's offset from wide pixel q
  // Output rows at least a vector wide are stored straight from the
  // registers: the vectors of rows [0, out_h - 1), (wide pixel, output
  // offset) in row order. A row's last vector overhangs into the next row,
  // whose own store, later, overwrites it; the last row, whose overhang
  // would leave the plane, goes through the wide buffer.
  std::vector<int64_t> row_src, row_dst;

  explicit PhasePlanes(const ConvGeometry& g) : geo(g), off(g.taps()) {
    constexpr int L = lanes<T>();
    const int sh = geo.stride_h, sw = geo.stride_w;
    const int64_t hq = (geo.in_h + 2 * int64_t{geo.pad_h} + sh - 1) / sh;
    wq = (geo.in_w + 2 * int64_t{geo.pad_w} + sw - 1) / sw;
    phase_size = hq * wq;
    nq = (geo.out_h - 1) * wq + geo.out_w;
    nq_vec = round_up(nq, L);
    int64_t reach = 0;
    for (int i = 0; i < geo.kh; ++i)
      for (int j = 0; j < geo.kw; ++j) {
        const int64_t r = int64_t(i) * geo.dil_h, c = int64_t(j) * geo.dil_w;
        const int64_t o = ((r % sh) * sw + c % sw) * phase_size + r / sh * wq + c / sw;
        off[i * geo.kw + j] = o;
        reach = std::max(reach, o);
      }
    if (geo.out_w >= L) {
      for (int64_t oh = 0; oh + 1 < geo.out_h; ++oh)
        for (int64_t x = 0; x < geo.out_w; x += L) {
          row_src.push_back(oh * wq + x);
          row_dst.push_back(oh * geo.out_w + x);
        }
      nq_vec = std::max(nq_vec, (geo.out_h - 1) * wq + round_up(geo.out_w, L));
    }
    size = std::max<int64_t>(int64_t(sh) * sw * phase_size, nq_vec + reach);
  }

  // Every (image, channel) plane: copied into the thread's buffer (pads set
  // to `pad` once), then tile(buf, out, src, dst, c, U) over its vectors in
  // runs of U: straight to the output rows (offsets row_src / row_dst), then
  // the rest (src and dst nullptr: consecutive vectors) into the wide buffer
  // whose real columns are copied out.
  template <int U, typename Tile>
  void sweep(const T* input, Strides4 in_s, T pad, T* output, double cost_per_pixel,
             int num_threads, Tile&& tile) const {
    constexpr int L = lanes<T>();
    const int64_t planes = geo.batch * geo.cout, ohw = geo.out_h * geo.out_w;
    if (planes == 0) return;
    const int sh = geo.stride_h, sw = geo.stride_w;
    num_threads = threads_for(double(planes) * ohw * cost_per_pixel, num_threads);
    // Tiles of U vectors, the rest in one tile (independent chains hide the
    // latency): n vectors at offsets src / dst, or wide pixels [q, nq_vec) as
    // consecutive vectors into the wide buffer.
    auto rows = [&](const T* buf, T* out, const int64_t* src, const int64_t* dst, int64_t n,
                    int64_t c) {
      int64_t v = 0;
      for (; v + U <= n; v += U)
        tile(buf, out, src + v, dst + v, c, std::integral_constant<int, U>{});
      if (v < n)
        with_count<U>(static_cast<int>(n - v),
                      [&](auto V) { tile(buf, out, src + v, dst + v, c, V); });
    };
    auto wide_runs = [&](const T* buf, T* wide_out, int64_t q, int64_t c) {
      for (; q + U * L <= nq_vec; q += U * L)
        tile(buf + q, wide_out + q, nullptr, nullptr, c, std::integral_constant<int, U>{});
      if (q < nq_vec)
        with_count<U>(static_cast<int>((nq_vec - q) / L),
                      [&](auto V) { tile(buf + q, wide_out + q, nullptr, nullptr, c, V); });
    };
    // Planes of 2 KiB and more have their next plane prefetched (below); on
    // smaller ones (14x14, 7x7) the loop cost more than the prefetches saved.
    const bool prefetch = in_s.w == 1 && geo.in_h * geo.in_w * int64_t(sizeof(T)) >= 2048;
#pragma omp parallel num_threads(num_threads)
    {
      T* const buf = wide::scratch_array<T>(wide::kSourceSlot, size);
      T* const wide_out = wide::scratch_array<T>(wide::kTileSlot, nq_vec);
      std::fill(buf, buf + size, pad);
      auto plane_input = [&](int64_t plane) {
        return input + plane / geo.cout * in_s.n + plane % geo.cout * in_s.c;
      };
#pragma omp for schedule(static)
      for (int64_t plane = 0; plane < planes; ++plane) {
        const int64_t c = plane % geo.cout;
        const T* src = plane_input(plane);
        // The next plane's rows are requested into L2 as this one's are
        // copied: the copy waits on memory, and the compute after it would
        // otherwise leave memory idle (a third of the bandwidth was used).
        const T* next = prefetch && plane + 1 < planes ? plane_input(plane + 1) : nullptr;
        for (int64_t h = 0; h < geo.in_h; ++h) {
          const int64_t r = h + geo.pad_h;
          if (next)
            for (int64_t x = 0; x < geo.in_w; x += 64 / int64_t(sizeof(T)))
              __builtin_prefetch(next + h * in_s.h + x, 0, 2);
          fill_row(src + h * in_s.h, in_s.w, geo.in_w, geo.pad_w, sw, phase_size,
                   buf + (r % sh) * sw * phase_size + r / sh * wq);
        }
        T* out = output + plane * ohw;
        // Rows stored from the registers, then the rest through the wide buffer.
        rows(buf, out, row_src.data(), row_dst.data(), static_cast<int64_t>(row_src.size()), c);
        const int64_t first = row_src.empty() ? 0 : geo.out_h - 1;
        wide_runs(buf, wide_out, first * wq, c);
        for (int64_t oh = first; oh < geo.out_h; ++oh)
          wide::copy_row(wide_out + oh * wq, geo.out_w, out + oh * geo.out_w);
      }
    }
  }
};

// A depthwise conv at column stride 2 read in place, without the copy into
// phase planes (planes too large for ChannelLanes). The lanes a tap reads
// outside the input (its padding) are masked to zero at the load.
//
// Stride2Rows: column stride 2 over contiguous rows, where the copy split
// every row into two phase planes. An output row is cut into vectors of L
// pixels; a tap's inputs for a vector are the even elements of two vectors
// of the input row, picked in the register. A row of padding reads a row of
// zeros. (Read so at stride 1, rows of 56 and 112 ran 1.4-1.8x slower than
// through the copy: the masks' bookkeeping per load outweighed it.)
template <typename T>
struct Stride2Rows {
  static constexpr int S = 2;
  // Tap column kw of an output row's vector v (cols[v * Kw + kw]): its
  // window of S * L input elements starts at row offset `off` (padding
  // columns negative); bits[i] marks the elements of its i-th L that are in
  // the row and feed a stored pixel.
  struct Col {
    int64_t off;
    unsigned bits[S];
  };
  int64_t nv;             // vectors per output row
  std::vector<Col> cols;  // [nv][Kw]

  explicit Stride2Rows(const ConvGeometry& geo) {
    constexpr int L = lanes<T>();
    nv = (geo.out_w + L - 1) / L;
    for (int64_t v = 0; v < nv; ++v)
      for (int kw = 0; kw < geo.kw; ++kw) {
        Col c{v * L * S - geo.pad_w + int64_t(kw) * geo.dil_w, {}};
        for (int l = 0; l < L && v * L + l < geo.out_w; ++l)
          if (c.off + S * l >= 0 && c.off + S * l < geo.in_w) c.bits[S * l / L] |= 1u << (S * l % L);
        cols.push_back(c);
      }
  }

  // The window of c at p, lane l holding element S * l.
  template <typename V>
  static V window(const T* p, const Col& c) {
    return pick_alternate(vload_bits<V>(p, c.bits[0]), vload_bits<V>(p + lanes<T>(), c.bits[1]), 0);
  }
};

// ChannelLanes: a depthwise conv with L channels in a vector's lanes, as
// ONNX Runtime's blocked layout has them. Per (image, L channels) the planes
// are transposed into one zero-padded buffer of L-channel pixels (flat
// L-pixel runs of L contiguous planes, transposed in the registers by
// simd.h's transpose); an output pixel is then one vector, each tap one
// unmasked load and one FMA with the tap's L weights, for any stride and
// dilation; L output pixels are transposed back and stored as runs of their
// L planes. The in-place kernel it replaced spent ~4 instructions per FMA on
// a load's mask, per channel plane, and ran MobileNet-V2's 7x7 and 14x14
// depthwise convs at a third of ONNX Runtime's speed (EPYC, batch 1). The
// buffer (the thread's scratch) takes planes up to most of a 512 KiB L2: at
// 56x56 and 112x112 it ran 1.2-1.5x (stride 1) and ~2x (stride 2) as fast
// as the in-place and phase-plane paths, which stay for larger planes and
// other layouts.
constexpr int64_t kChannelLanesBytes = 448 << 10;

template <typename T>
bool channel_lanes_fit(const ConvGeometry& geo, Strides4 in_s) {
  const int64_t hp = geo.in_h + 2 * int64_t(geo.pad_h), wp = geo.in_w + 2 * int64_t(geo.pad_w);
  return in_s.w == 1 && in_s.h == geo.in_w &&
         hp * wp * lanes<T>() * int64_t(sizeof(T)) <= kChannelLanesBytes;
}

template <typename T>
void depthwise_channel_lanes(const ConvGeometry& geo, const T* weight, const T* input,
                             Strides4 in_s, const T* bias, const OutputClamp& clamp, T* output,
                             int num_threads) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  const int64_t wp = geo.in_w + 2 * int64_t(geo.pad_w);
  const int64_t hp = geo.in_h + 2 * int64_t(geo.pad_h);
  const int64_t ihw = geo.in_h * geo.in_w, ohw = geo.out_h * geo.out_w;
  const int taps = geo.taps();
  const int64_t groups = (geo.cout + L - 1) / L, items = geo.batch * groups;
  // Buffer offsets (elements): input pixel p's, output pixel p's tap 0, tap t's.
  // (Row by row: a division per pixel cost a 112x112 plane ~0.1 ms.)
  std::vector<int64_t> in_at(ihw), out_at(ohw), tap_at(taps);
  for (int64_t ih = 0, p = 0; ih < geo.in_h; ++ih)
    for (int64_t iw = 0; iw < geo.in_w; ++iw, ++p)
      in_at[p] = ((ih + geo.pad_h) * wp + iw + geo.pad_w) * L;
  for (int64_t oh = 0, p = 0; oh < geo.out_h; ++oh)
    for (int64_t ow = 0; ow < geo.out_w; ++ow, ++p)
      out_at[p] = (oh * geo.stride_h * wp + ow * geo.stride_w) * L;
  for (int kh = 0; kh < geo.kh; ++kh)
    for (int kw = 0; kw < geo.kw; ++kw)
      tap_at[kh * geo.kw + kw] = (int64_t(kh) * geo.dil_h * wp + int64_t(kw) * geo.dil_w) * L;
  const bool clamped = clamp.active();
  const T lo = T(clamp.lo), hi = T(clamp.hi);
  num_threads = threads_for(double(geo.batch) * geo.cout * ohw * 64.0, num_threads);
#pragma omp parallel num_threads(num_threads)
  {
    // The padded planes, kept by the thread between calls (a 112x112 plane's
    // is 400 KB: allocated and zeroed per call it cost as much as the conv at
    // batch 1). Only the halo is zeroed: the fills write everything inside it.
    T* const buf = wide::scratch_array<T>(wide::kSourceSlot, hp * wp * L);
    for (int64_t r = 0; r < hp; ++r) {
      const bool inside = r >= geo.pad_h && r < geo.pad_h + geo.in_h;
      wide::zero_row(buf + r * wp * L, (inside ? geo.pad_w : wp) * L);
      if (inside)
        wide::zero_row(buf + (r * wp + geo.pad_w + geo.in_w) * L, geo.pad_w * L);
    }
    std::vector<T> wt(taps * L), bv(L);
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / groups, c0 = item % groups * L;
      const int nc = static_cast<int>(std::min<int64_t>(L, geo.cout - c0));
      const T* x = input + n * in_s.n + c0 * in_s.c;
      for (int64_t p0 = 0; p0 < ihw; p0 += L) {
        const int np = static_cast<int>(std::min<int64_t>(L, ihw - p0));
        V r[L];
        for (int c = 0; c < L; ++c)
          r[c] = c >= nc ? V{} : np == L ? vload<V>(x + c * in_s.c + p0)
                                          : vload_lanes<V>(x + c * in_s.c + p0, 0, np);
        transpose(r);
        for (int k = 0; k < np; ++k) vstore(buf + in_at[p0 + k], r[k]);
      }
      for (int t = 0; t < taps; ++t)
        for (int c = 0; c < L; ++c) wt[t * L + c] = c < nc ? weight[(c0 + c) * taps + t] : T(0);
      for (int c = 0; c < L; ++c) bv[c] = bias && c < nc ? bias[c0 + c] : T(0);
      T* out = output + (n * geo.cout + c0) * ohw;
      for (int64_t p0 = 0; p0 < ohw; p0 += L) {
        const int np = static_cast<int>(std::min<int64_t>(L, ohw - p0));
        V acc[L];
        const V b = vload<V>(bv.data());
        for (int k = 0; k < L; ++k) acc[k] = b;
        // L output pixels, or the last np (the rest of the tile, zero,
        // read the buffer's first pixel: stored by no one).
        const T* px[L];
        for (int k = 0; k < L; ++k) px[k] = buf + (k < np ? out_at[p0 + k] : 0);
        for (int t = 0; t < taps; ++t) {
          const V w = vload<V>(wt.data() + t * L);
          const int64_t at = tap_at[t];
#pragma GCC unroll 16
          for (int k = 0; k < L; ++k) acc[k] = vfma(w, vload<V>(px[k] + at), acc[k]);
        }
        if (clamped)
          for (int k = 0; k < L; ++k) acc[k] = vclamp(acc[k], lo, hi);
        transpose(acc);
        for (int c = 0; c < nc; ++c) {
          if (np == L)
            vstore(out + c * ohw + p0, acc[c]);
          else
            vstore_lanes(out + c * ohw + p0, acc[c], 0, np);
        }
      }
    }
  }
}

// Every (image, channel) plane of a depthwise conv read in place:
// tile(x, w, b, out, e, N) computes its output vectors [e, e + N) in runs of
// kWindowVectors (independent chains of FMAs).
template <typename T, typename Tile>
void depthwise_planes(const ConvGeometry& geo, const T* weight, const T* input, Strides4 in_s,
                      const T* bias, T* output, int64_t vectors, int num_threads, Tile&& tile) {
  constexpr int U = kWindowVectors;
  const int64_t planes = geo.batch * geo.cout, ohw = geo.out_h * geo.out_w;
  const int taps = geo.taps();
  num_threads = threads_for(double(planes) * ohw * 64.0, num_threads);
#pragma omp parallel for num_threads(num_threads) schedule(static)
  for (int64_t plane = 0; plane < planes; ++plane) {
    const int64_t c = plane % geo.cout;
    const T* x = input + plane / geo.cout * in_s.n + c * in_s.c;
    const T* w = weight + c * taps;
    const T b = bias ? bias[c] : T(0);
    T* out = output + plane * ohw;
    int64_t e = 0;
    for (; e + U <= vectors; e += U) tile(x, w, b, out, e, std::integral_constant<int, U>{});
    if (e < vectors)
      with_count<U>(static_cast<int>(vectors - e), [&](auto N) { tile(x, w, b, out, e, N); });
  }
}

// A tile's vector to the output at `at`: the clamp, then its first n
// lanes (the pixels left in its row or plane), fewer than L through a
// masked store.
template <typename T, typename V>
inline void store_vector(T* at, V y, int64_t n, bool clamped, T lo, T hi) {
  if (clamped) y = vclamp(y, lo, hi);
  if (n >= lanes<T>())
    vstore(at, y);
  else
    vstore_lanes(at, y, 0, static_cast<int>(n));
}

// Input rows ahead of a tile's whose window lines depthwise_stride2
// prefetches. Its planes (too large for ChannelLanes) come from memory,
// where the hardware prefetchers alone left it at ~10 GB/s against the 22 a
// plain sum of the same activation streams at: 8 x 96 x 112 x 112 at
// stride 2, a new input each call, 3.8 -> 2.1-2.5 ms (16 rows ahead no
// better; ad hoc warm loops, Xeon, AVX-512).
constexpr int64_t kDwPrefetchRows = 8;
template <typename T>
void depthwise_stride2(const ConvGeometry& geo, const T* weight, const T* input, Strides4 in_s,
                       const T* bias, const OutputClamp& clamp, T* output, int num_threads) {
  using V = typename Vec<T>::type;
  using Rows = Stride2Rows<T>;
  constexpr int L = lanes<T>();
  const Rows rows(geo);
  const int64_t nv = rows.nv;
  const int kw_n = geo.kw;
  const bool clamped = clamp.active();
  const T lo = T(clamp.lo), hi = T(clamp.hi);
  // The row a padding row reads: its reads stay within a real row's, all zero.
  thread_local std::vector<T> zero_row;
  zero_row.assign(static_cast<size_t>(geo.in_w), T(0));
  const T* const zeros = zero_row.data();
  // A tile spans rows: a row of one vector would leave one chain of FMAs.
  depthwise_planes(geo, weight, input, in_s, bias, output, geo.out_h * nv, num_threads,
                   [&](const T* x, const T* w, T b, T* out, int64_t e, auto N_) {
    constexpr int N = decltype(N_)::value;
    V acc[N];
    int64_t row0[N], stored[N];  // input row of kh = 0; the vector's pixels in its row
    const typename Rows::Col* col[N];  // its tap column 0
    T* at[N];
    int64_t oh = e / nv, v = e % nv;
    for (int u = 0; u < N; ++u) {
      acc[u] = vbcast<V>(b);
      row0[u] = oh * geo.stride_h - geo.pad_h;
      col[u] = rows.cols.data() + v * kw_n;
      at[u] = out + oh * geo.out_w + v * L;
      stored[u] = geo.out_w - v * L;
      if (++v == nv) v = 0, ++oh;
    }
    for (int kh = 0; kh < geo.kh; ++kh) {
      const T* row[N];
      for (int u = 0; u < N; ++u) {
        const int64_t ih = row0[u] + int64_t(kh) * geo.dil_h;
        row[u] = ih >= 0 && ih < geo.in_h ? x + ih * in_s.h : zeros;
      }
      for (int u = 0; u < N; ++u) {
        const T* ahead = x + (row0[u] + int64_t(kh) * geo.dil_h + kDwPrefetchRows) * in_s.h +
                         col[u][0].off;
        __builtin_prefetch(ahead);
        __builtin_prefetch(ahead + 2 * L - 1);
      }
      for (int kw = 0; kw < kw_n; ++kw) {
        const V s = vbcast<V>(w[kh * kw_n + kw]);
#pragma GCC unroll 8
        for (int u = 0; u < N; ++u) {
          const typename Rows::Col& c = col[u][kw];
          acc[u] = vfma(s, Rows::template window<V>(row[u] + c.off, c), acc[u]);
        }
      }
    }
    for (int u = 0; u < N; ++u) store_vector(at[u], acc[u], stored[u], clamped, lo, hi);
  });
}

template <typename T>
void depthwise_forward(const ConvGeometry& geo, const T* weight, const T* input, Strides4 in_s,
                       const T* bias, const OutputClamp& clamp, T* output, int num_threads) {
  using V = typename Vec<T>::type;
  if (channel_lanes_fit<T>(geo, in_s))
    return depthwise_channel_lanes(geo, weight, input, in_s, bias, clamp, output, num_threads);
  if (geo.stride_w == 2 && in_s.w == 1)
    return depthwise_stride2(geo, weight, input, in_s, bias, clamp, output, num_threads);
  const PhasePlanes<T> pp(geo);
  const int taps = geo.taps();
  const int64_t* off = pp.off.data();
  const bool clamped = clamp.active();
  const T lo = T(clamp.lo), hi = T(clamp.hi);
  // threads_for counts multiply-adds at the sparse kernels' rate; a pixel
  // here costs ~1.2 ns on one core (copied in, 9 taps, copied out), about 64
  // multiply-adds at that rate.
  pp.template sweep<kWindowVectors>(
      input, in_s, T(0), output, 64.0, num_threads,
      [&](const T* base, T* out, auto src, auto dst, int64_t c, auto U_) {
        constexpr int U = decltype(U_)::value;
        const T* w = weight + c * taps;
        V acc[U];
        for (int u = 0; u < U; ++u) acc[u] = vbcast<V>(bias ? bias[c] : T(0));
        for (int t = 0; t < taps; ++t) {
          const T* p = base + off[t];
          const V s = vbcast<V>(w[t]);
#pragma GCC unroll 8
          for (int u = 0; u < U; ++u) acc[u] = vfma(s, vload<V>(p + at<T>(src, u)), acc[u]);
        }
        if (clamped)
          for (int u = 0; u < U; ++u) acc[u] = vclamp(acc[u], lo, hi);
        for (int u = 0; u < U; ++u) vstore(out + at<T>(dst, u), acc[u]);
      });
}

template <typename T>
void max_pool_forward(const ConvGeometry& geo, const T* input, Strides4 in_s, T* output,
                      int num_threads) {
  using V = typename Vec<T>::type;
  const PhasePlanes<T> pp(geo);
  const int taps = geo.taps();
  const int64_t* off = pp.off.data();
  pp.template sweep<kWindowVectors>(
      input, in_s, -std::numeric_limits<T>::infinity(), output, 64.0, num_threads,
      [&](const T* base, T* out, auto src, auto dst, int64_t, auto U_) {
        constexpr int U = decltype(U_)::value;
        V m[U];
        for (int u = 0; u < U; ++u) m[u] = vload<V>(base + off[0] + at<T>(src, u));
        for (int t = 1; t < taps; ++t) {
          const T* p = base + off[t];
#pragma GCC unroll 8
          for (int u = 0; u < U; ++u) {
            const V x = vload<V>(p + at<T>(src, u));
            m[u] = (x > m[u]) | (x != x) ? x : m[u];  // NaN wins, as in torch's max pool
          }
        }
        for (int u = 0; u < U; ++u) vstore(out + at<T>(dst, u), m[u]);
      });
}
