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
// SSE: 4 x 3).
constexpr int kFwdMaxJ = kVecRegs / 4;
// Pixel vectors per tile of J channels: as many as the vector registers
// hold. On AVX2, 4 x 3 (16 registers, 12 accumulators) beat 4 x 2, which
// left one register spare and 8 accumulators to cover two FMA pipes.
constexpr int fwd_vectors(int J) { return std::clamp((kVecRegs - 1) / (J + 1), 1, 8); }
// Slack past a pixel chunk that a tile may read (the widest tile).
constexpr int kFwdMaxTile = fwd_vectors(1);

// Blocks ahead whose input rows fwd_tile prefetches, for a 1x1 conv's
// blocks (one tap each)...
constexpr int kFwdPrefetch = 4;
// ...and for blocks of several taps, whose window rows (each one line more
// than the tile's vectors: the taps shift it) come from L2 or L3. On the
// Xeon, 8 rather than 4 blocks ahead took a stride-2 3x3 conv, with a
// quarter of its tile's samples on the first FMA after the input loads, to
// 0.87-0.94x the time; 16 was slower than 8 (ad hoc warm loops).
constexpr int kFwdTapPrefetch = 8;
// 1x1 blocks per step of the next item's prefetch (FwdTile::next): fewer
// lines per step than per tile (a tile's burst of them stalled its loads),
// less scalar work than a step per block.
constexpr int kFwdStepBlocks = 8;
// The tap offset of a 1x1 conv read in place: its one tap at the pixel.
constexpr int64_t kInPlaceTapOffset = 0;

template <typename T>
struct FwdTile {
  const T* x;              // input channel 0 of the group at the tile's first pixel
  int64_t cs;              // input channel stride
  const int64_t* tap_off;  // per tap
  int taps;
  // Where a block's input is prefetched: one offset per row of the window
  // its taps read (InputSource::row_first; the first row alone left the
  // others, two thirds of a 3x3 conv's lines, to demand misses from L2).
  const int64_t* fetch;
  int nfetch;
  const int32_t* col;      // the row's kept input channels (block columns)
  const T* w;              // the row's first block, [taps][n], at lane j0
  int64_t nblocks;
  int n;                   // weight stride of one tap
  OutputClamp clamp;       // the epilogue after the bias (a fused activation)
  wide::Trickle* next;     // the next item's input, a step per kFwdStepBlocks 1x1 blocks
};

// Where a tile's channels go: channel j at output offset d is out[d + j *
// cs], after the residual res[d + j * cs] (a fused residual add; null: none)
// is added and the tile's clamp applied.
template <typename T>
struct FwdOut {
  T* out;
  const T* res;
  int64_t cs;
};

// acc[j][u] += wt[j] * xt[u*L ..]: one tap of one block, U input vectors
// loaded once and J weights broadcast. (The channel-lane forward calls it
// with the roles swapped: weight vectors loaded, up to 14 pixels broadcast,
// each loop unrolled whole so the accumulators stay in registers.)
template <typename T, int J, int U>
inline void fwd_tap(typename Vec<T>::type (&acc)[J][U], const T* xt, const T* wt) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V xv[U];
#pragma GCC unroll 8
  for (int u = 0; u < U; ++u) xv[u] = vload<V>(xt + u * L);
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j) {
    const V s = vbcast<V>(wt[j]);
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u) acc[j][u] = vfma(s, xv[u], acc[j][u]);
  }
}

// The input rows a tile will read for a block a few ahead: blocks read
// scattered channels, which the hardware prefetchers do not follow.
template <typename T, int U>
inline void fwd_prefetch(const T* next) {
  for (int u = 0; u < U * lanes<T>(); u += 64 / int(sizeof(T))) __builtin_prefetch(next + u);
}

// Where fwd_lanes stores the vectors of pixels [q0, q1): vector v at q0 + v *
// L (v < (q1 - q0) / L), and a last one at q1 - L. whole[v] is the output
// offset of a vector stored whole (Wide::whole_vector), or -1: its real
// pixels below q1 are then the runs [first[v], first[v + 1]) of (lane,
// count, output offset), each stored from the register with a masked store.
// Built once per pixel chunk: the divisions it takes cost as much as a short
// row's FMAs, and small images (32x32 with padding) have few whole vectors.
struct StoreMap {
  struct Run {
    int lane, n;
    int64_t off;
  };
  std::vector<int64_t> whole;
  std::vector<int32_t> first;
  std::vector<Run> runs;

  void build(const wide::Wide& wide, int64_t q0, int64_t q1, int64_t img_stride, int L) {
    whole.clear(), first.clear(), runs.clear();
    auto add = [&](int64_t q) {
      const bool w = q + L <= q1 && wide.whole_vector(q, L);
      whole.push_back(w ? wide.out_offset(q, img_stride) : -1);
      first.push_back(static_cast<int32_t>(runs.size()));
      if (w) return;
      const int64_t end = std::min<int64_t>(q + L, q1);
      for (int64_t r = q / wide.ww; r * wide.ww < end; ++r) {
        const int64_t b = r / wide.rh, h = r % wide.rh;
        if (b >= wide.nb || h >= wide.vh) continue;
        const int64_t lo = std::max(q, r * wide.ww), hi = std::min(end, r * wide.ww + wide.vw);
        if (hi > lo)
          runs.push_back({static_cast<int>(lo - q), static_cast<int>(hi - lo),
                          b * img_stride + h * wide.vw + (lo - r * wide.ww)});
      }
    };
    for (int64_t q = q0; q + L <= q1; q += L) add(q);
    add(std::max(q0, q1 - L));
    first.push_back(static_cast<int32_t>(runs.size()));
  }
};

// acc[j][u] = init[j] + sum over the row's blocks k and taps t of
// w[k][t][j] * x[col[k]][off[t] + u*L ..]: J channels x U vectors at wide
// pixel q, the map's vector v. Each vector is stored from the registers,
// the residual added and the clamp (a.clamp) applied first: whole, or its
// real pixels run by run (StoreMap).
template <typename T, int J, int U>
inline void fwd_tile(const FwdTile<T>& a, const StoreMap& map, int64_t q, int64_t v,
                     const T* init, const FwdOut<T>& o) {
  using V = typename Vec<T>::type;
  // Every loop over acc is unrolled whole: left rolled, GCC kept acc in a
  // stack array around the start and store loops, 48 spills and reloads a
  // tile (unrolled, 1x1 convs at 90% took 0.92x the time).
  V acc[J][U];
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j)
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[j][u] = vbcast<V>(init ? init[j] : T(0));
  const int64_t wstep = int64_t(a.taps) * a.n;
  const T* wk = a.w;
  const T* x = a.x + q;
  const int32_t* col = a.col;
  const int64_t cs = a.cs, ahead = a.nblocks - kFwdPrefetch;
  if (a.taps == 1) {
    // A 1x1 conv's block is one tap: without the tap loop's setup per block
    // the scalar work stops competing with the FMAs for issue slots.
    const T* x0 = x + a.tap_off[0];
    auto blocks = [&](int64_t k0, int64_t k1) {
#pragma GCC unroll 2
      for (int64_t k = k0; k < k1; ++k, wk += wstep) {
        if (k < ahead) fwd_prefetch<T, U>(x0 + col[k + kFwdPrefetch] * cs);
        fwd_tap<T, J, U>(acc, x0 + col[k] * cs, wk);
      }
    };
    // The next item's prefetch in segments, only while it runs: the
    // segmented loop alone cost a layer that fetches nothing ahead ~7%.
    if (a.next->active()) {
      for (int64_t k0 = 0; k0 < a.nblocks; k0 += kFwdStepBlocks) {
        a.next->step();
        blocks(k0, std::min<int64_t>(k0 + kFwdStepBlocks, a.nblocks));
      }
    } else {
      blocks(0, a.nblocks);
    }
  } else {
    const int64_t far = a.nblocks - kFwdTapPrefetch;
    for (int64_t k = 0; k < a.nblocks; ++k, wk += wstep) {
      if (k < far)
        for (int f = 0; f < a.nfetch; ++f)
          fwd_prefetch<T, U + 1>(x + col[k + kFwdTapPrefetch] * cs + a.fetch[f]);
      const T* xc = x + col[k] * cs;
      for (int t = 0; t < a.taps; ++t) fwd_tap<T, J, U>(acc, xc + a.tap_off[t], wk + t * a.n);
    }
  }
  const bool clamped = a.clamp.active();
  const T lo = T(a.clamp.lo), hi = T(a.clamp.hi);
#pragma GCC unroll 16
  for (int u = 0; u < U; ++u) {
    if (const int64_t d = map.whole[v + u]; d >= 0) {
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) {
        V y = acc[j][u];
        if (o.res) y += vload<V>(o.res + d + j * o.cs);
        vstore(o.out + d + j * o.cs, clamped ? vclamp(y, lo, hi) : y);
      }
      continue;
    }
    for (int32_t k = map.first[v + u]; k < map.first[v + u + 1]; ++k) {
      const StoreMap::Run& run = map.runs[k];
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) {
        const int64_t d = run.off + j * o.cs;
        V y = acc[j][u];
        if (o.res) y += vload_lanes<V>(o.res + d, run.lane, run.n);
        vstore_lanes(o.out + d, clamped ? vclamp(y, lo, hi) : y, run.lane, run.n);
      }
    }
  }
}

// Pixels [q0, q1) of the wide layout for lanes [j0, j0 + J) of a block row:
// tiles of U vectors, then as few whole vectors as the rest holds, then a
// last partial vector moved back to end at q1 (it recomputes and stores again
// a few pixels of this call, so no read passes q1: a direct source has no
// slack). Only a range shorter than one vector reads past q1 (copied sources).
template <typename T, int J>
void fwd_lanes(const FwdTile<T>& a, const StoreMap& map, int64_t q0, int64_t q1, const T* init,
               const FwdOut<T>& o) {
  constexpr int L = lanes<T>(), U = fwd_vectors(J);
  auto tile = [&](auto V, int64_t q, int64_t v) {
    fwd_tile<T, J, decltype(V)::value>(a, map, q, v, init, o);
  };
  int64_t q = q0;
  for (; q + U * L <= q1; q += U * L) tile(std::integral_constant<int, U>{}, q, (q - q0) / L);
  if (const int whole = static_cast<int>((q1 - q) / L)) {
    with_count<U>(whole, [&](auto V) { tile(V, q, (q - q0) / L); });
    q += whole * L;
  }
  if (q < q1) tile(std::integral_constant<int, 1>{}, std::max(q0, q1 - L), (q1 - q0) / L);
}

// The input as a forward sweep reads it: group channel c of tap t at
// x + c * cs + off[t] + q for wide pixel q of the layout `wide`.
template <typename T>
struct FwdSource {
  const T* x;
  int64_t cs;
  const int64_t* off;
  const int64_t* fetch;  // FwdTile::fetch
  int nfetch;
  wide::Wide wide;
  int64_t npix;  // pixels to compute: up to the last real one
};

// How a forward sweep splits its work: pixel chunks (each keeps the input
// rows over it in L2 while block rows sweep it) and block rows, split only as
// far as needed to give every thread work. `sources`: images the sweep's
// items range over (each a source of npix pixels). Item i is (source,
// group, pixel chunk, block-row chunk), the last varying fastest.
struct FwdSplit {
  int64_t npix, groups, rows_per_group;
  int64_t chunk, nchunks, row_chunks, rows_per_chunk;

  struct Item {
    int64_t b, g, q0, q1, r0, r1;  // source, group, pixels [q0, q1), block rows [r0, r1)
  };
  int64_t items_per_source() const { return groups * nchunks * row_chunks; }
  Item item(int64_t i) const {
    const int64_t rc = i % row_chunks, pc = i / row_chunks % nchunks;
    const int64_t bg = i / row_chunks / nchunks, g = bg % groups;
    const int64_t q0 = pc * chunk, q1 = pc == nchunks - 1 ? npix : q0 + chunk;
    const int64_t r0 = g * rows_per_group + rc * rows_per_chunk;
    return {bg / groups, g, q0, q1, r0, std::min(r0 + rows_per_chunk, (g + 1) * rows_per_group)};
  }
};

template <typename T>
FwdSplit fwd_split(const ConvGeometry& geo, const Block1xN& bk, int64_t npix, int64_t chunk,
                   int64_t sources, int num_threads) {
  // Near-equal chunks of whole widest tiles but the last, which is no
  // shorter than a vector unless the whole range is (fwd_lanes moves its
  // tail back).
  constexpr int L = lanes<T>(), kTile = fwd_vectors(kFwdMaxJ) * L;
  int64_t nchunks = (npix + chunk - 1) / chunk;
  if (num_threads > 1) {
    // Block rows too few to give every thread two items (a small layer at
    // batch 1: ResNet-56's 16 channels are one row): split the pixels too.
    const int64_t rows = sources * geo.groups * bk.rows_per_group;
    nchunks = std::max(nchunks, std::min((2 * num_threads + rows - 1) / rows, npix / kTile));
  }
  chunk = round_up((npix + nchunks - 1) / nchunks, kTile);
  nchunks = (npix + chunk - 1) / chunk;
  if (nchunks > 1 && npix - (nchunks - 1) * chunk < L) --nchunks;
  const int64_t coarse = sources * geo.groups * nchunks;
  const int64_t row_chunks = std::min<int64_t>(
      bk.rows_per_group, std::max<int64_t>(1, (4 * num_threads + coarse - 1) / coarse));
  return {npix, geo.groups, bk.rows_per_group, chunk, nchunks, row_chunks,
          (bk.rows_per_group + row_chunks - 1) / row_chunks};
}

// One work item of a forward sweep: block rows [r0, r1) of group g over
// pixels [q0, q1) of a source holding images [b0, b0 + src.wide.nb).
template <typename T>
void fwd_item(const ConvGeometry& geo, const Block1xN& bk, const T* values, const T* bias,
              const OutputClamp& clamp, const T* residual, const FwdSource<T>& src, int64_t g,
              int64_t q0, int64_t q1, int64_t r0, int64_t r1, int64_t b0, StoreMap& map,
              wide::Trickle& next, T* output) {
  constexpr int L = lanes<T>();
  const int64_t ohw = geo.out_h * geo.out_w, cin_g = geo.cin_per_group();
  const int taps = geo.taps();
  map.build(src.wide, q0, q1, geo.cout * ohw, L);
  for (int64_t r = r0; r < r1; ++r) {
    const int valid = block_row_valid(geo, bk, r);
    const int64_t o0 = block_row_first_out(geo, bk, r);
    const int32_t k0 = bk.row_ptr[r];
    FwdTile<T> a{src.x + g * cin_g * src.cs, src.cs, src.off, taps, src.fetch, src.nfetch,
                 bk.col_idx + k0, values + int64_t(k0) * taps * bk.n, bk.row_ptr[r + 1] - k0,
                 bk.n, clamp, &next};
    for (int j0 = 0; j0 < valid; j0 += kFwdMaxJ, a.w += kFwdMaxJ) {
      const T* init = bias ? bias + o0 + j0 : nullptr;
      const int64_t at = b0 * geo.cout * ohw + (o0 + j0) * ohw;
      const FwdOut<T> o{output + at, residual ? residual + at : nullptr, ohw};
      with_count<kFwdMaxJ>(std::min(kFwdMaxJ, valid - j0), [&](auto J) {
        fwd_lanes<T, decltype(J)::value>(a, map, q0, q1, init, o);
      });
    }
  }
}

// Every (pixel chunk, block row) of one source holding images [b0, b0 +
// src.wide.nb) (orphaned omp for). Items: (group, pixel chunk, block-row
// chunk).
template <typename T>
void fwd_sweep(const ConvGeometry& geo, const Block1xN& bk, const T* values, const T* bias,
               const OutputClamp& clamp, const T* residual, const FwdSource<T>& src,
               int64_t chunk, int64_t b0, StoreMap& map, T* output, int num_threads) {
  const FwdSplit sp = fwd_split<T>(geo, bk, src.npix, chunk, 1, num_threads);
  wide::Trickle none;
#pragma omp for schedule(dynamic, 1)
  for (int64_t i = 0; i < sp.items_per_source(); ++i) {
    const FwdSplit::Item it = sp.item(i);
    fwd_item(geo, bk, values, bias, clamp, residual, src, it.g, it.q0, it.q1, it.r0, it.r1, b0,
             map, none, output);
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

// The forward of a conv that reads_in_place. Read in place, the input
// comes from memory, scattered by channel: the first block row over a pixel
// chunk waited on it (a 1x1 layer of few weights took ~1.6x as long with
// its input out of cache as in it). So where a pixel chunk's input, the next
// chunk's and a group's weights fit L2 together, the items (image, group,
// pixel chunk, block-row chunk) are split in order into one contiguous range
// per thread, of near-equal multiply-adds: a thread knows its next item and
// fetches that item's input (the group's channels any block reads, over its
// pixel chunk) into L2 while it computes this one (Trickle). Where they do
// not fit, the next input evicted this one's before its last row (layers of
// many weights, e.g. 1024 -> 512 at 14x14, lost up to ~1.1x, ad-hoc, not
// kept): there the items are scheduled dynamically, none fetched ahead.
template <typename T>
void fwd_in_place(const ConvGeometry& geo, const Block1xN& bk, const T* values, const T* input,
                  Strides4 in_s, const T* bias, const OutputClamp& clamp, const T* residual,
                  T* output, int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>(), kTile = fwd_vectors(kFwdMaxJ) * L;
  constexpr int64_t kL2Budget = int64_t(1) << 20;
  const int64_t ohw = geo.out_h * geo.out_w, cin_g = geo.cin_per_group();
  FwdSource<T> src{nullptr, in_s.c, &kInPlaceTapOffset, &kInPlaceTapOffset, 1, Wide{}, ohw};
  src.wide.ww = src.wide.vw = geo.in_w;
  src.wide.rh = src.wide.vh = geo.in_h;
  src.wide.nb = 1;
  const int64_t chunk = chunk_pixels(cin_g, 0, sizeof(T), kTile, ohw);
  const int64_t group_weights = bk.nnzb / std::max<int64_t>(geo.groups, 1) * bk.n;
  const bool ahead = int64_t(sizeof(T)) * (2 * cin_g * chunk + group_weights) <= kL2Budget;
  // Fetching ahead, the images are items too; otherwise the rows are split
  // as finely as for one image, for the dynamic schedule to balance.
  const FwdSplit sp = fwd_split<T>(geo, bk, ohw, chunk, ahead ? geo.batch : 1, num_threads);
  using Item = FwdSplit::Item;
  const int64_t nitems = geo.batch * sp.items_per_source();
  auto run = [&](const Item& it, StoreMap& map, Trickle& next) {
    FwdSource<T> img = src;
    img.x = input + it.b * in_s.n;
    fwd_item(geo, bk, values, bias, clamp, residual, img, it.g, it.q0, it.q1, it.r0, it.r1,
             it.b, map, next, output);
  };
  if (!ahead) {
    // An image at a time: both threads read its input, which the first
    // brings into the shared cache, rather than one image each.
    const int64_t per_image = sp.items_per_source();
#pragma omp parallel num_threads(num_threads)
    {
      StoreMap map;
      Trickle none;
      for (int64_t b = 0; b < geo.batch; ++b) {
#pragma omp for schedule(dynamic, 1)
        for (int64_t i = b * per_image; i < (b + 1) * per_image; ++i) run(sp.item(i), map, none);
      }
    }
    return;
  }
  // The channels of each group that any block reads.
  const std::vector<char> read = channels_read(geo, bk);
  std::vector<int32_t> read_ch;
  std::vector<int64_t> read_first{0};
  for (int64_t g = 0; g < geo.groups; ++g) {
    for (int64_t c = 0; c < cin_g; ++c)
      if (read[g * cin_g + c]) read_ch.push_back(static_cast<int32_t>(c));
    read_first.push_back(static_cast<int64_t>(read_ch.size()));
  }
  // Per item its multiply-adds (a row's stores counted as one block) and the
  // step() calls its 1x1 tiles make.
  std::vector<double> cost(nitems);
  std::vector<int64_t> steps(nitems);
  for (int64_t i = 0; i < nitems; ++i) {
    const Item it = sp.item(i);
    int64_t blocks = 0, stepped = 0;
    for (int64_t r = it.r0; r < it.r1; ++r) {
      const int64_t nb = bk.row_ptr[r + 1] - bk.row_ptr[r];
      blocks += nb + 1;
      stepped += (nb + kFwdStepBlocks - 1) / kFwdStepBlocks *
                 ((block_row_valid(geo, bk, r) + kFwdMaxJ - 1) / kFwdMaxJ);
    }
    cost[i] = double(blocks) * double(it.q1 - it.q0);
    steps[i] = stepped * ((it.q1 - it.q0) / kTile);
  }
#pragma omp parallel num_threads(num_threads)
  {
    const std::vector<int64_t> first = partition_by_cost(cost, omp_get_num_threads());
    const int t = omp_get_thread_num();
    StoreMap map;
    Trickle next;
    for (int64_t i = first[t]; i < first[t + 1]; ++i) {
      const Item it = sp.item(i);
      next.stop();
      if (i + 1 < first[t + 1]) {
        const Item nx = sp.item(i + 1);
        if (nx.b != it.b || nx.g != it.g || nx.q0 != it.q0)
          next.start(reinterpret_cast<const char*>(input + nx.b * in_s.n +
                                                   nx.g * cin_g * in_s.c + nx.q0),
                     read_ch.data() + read_first[nx.g], read_first[nx.g + 1] - read_first[nx.g],
                     in_s.c * int64_t(sizeof(T)), (nx.q1 - nx.q0) * int64_t(sizeof(T)),
                     steps[i]);
      }
      run(it, map, next);
    }
  }
}

// ---------------------------------------------------------------------------
// Forward of a small-image 1x1 conv with output channels in the vector: a
// register tile is V vectors of a block row's channels x P pixels; per kept
// block, V weight vectors (the format's N consecutive scalars) and P input
// scalars broadcast, V*P FMAs. On a 7x7 or 14x14 image the pixels-in-the-
// vector tiles waste lanes on the image's tail and read every input vector
// once per lane group from L2; here a block's input is P consecutive floats
// of one line, and the row's weights stay in L1 across its pixel tiles.
// ---------------------------------------------------------------------------

// Channel vectors per tile, and pixels: V*P accumulators + V weights + a
// broadcast, at most a vector's lanes of pixels (the store transposes L x L
// blocks): AVX2 2 x 6, AVX-512 2 x 14, SSE 2 x 4.
constexpr int kLaneVectors = 2;
// Blocks ahead whose input line lane_tile prefetches: a row's first tile
// finds them in L3 or memory, ~100 cycles away, ~6 cycles of FMAs a block.
constexpr int kLanePrefetch = 16;
template <typename T>
constexpr int lane_pixels() {
  return std::min((kVecRegs - kLaneVectors - 1) / kLaneVectors, lanes<T>());
}

// Whether a conv that reads_in_place takes the channel-lane forward: its
// block rows are whole vectors, an image is at most 256 pixels and a row
// keeps 32 blocks or more on average. Side by side with the pixels-in-the-
// vector sweep (ad hoc, AVX2, 2 threads, batch 1 and 8): 0.60-0.92x its time
// at 7x7, 0.75-0.95x at 14x14. With fewer blocks a row, the tile's
// transposed stores (16 channel rows, a few pixels each) outweigh its FMAs:
// 1.1x at 90% of 256 -> 1024 at 14x14, batch 8 (26 blocks a row); on 28x28
// images the pixel sweep's input reuse wins (up to 2x at 90%). A row of one
// vector (N = 16 on AVX-512) makes a tile of one channel vector, which loads
// a broadcast per FMA: on the Xeon it lost to the sweep at 14x14 (1.08-1.13x)
// and still won at 7x7 (0.92-0.95x), where the sweep wastes a quarter of its
// lanes (benchmarks/cpu_1xn_kernels.md, fifteenth round).
template <typename T>
bool takes_channel_lanes(const ConvGeometry& geo, const Block1xN& bk) {
  constexpr int64_t kMinRowBlocks = 32;
  const int64_t max_pixels = bk.n >= kLaneVectors * lanes<T>() ? 256 : 64;
  const int64_t rows = geo.groups * bk.rows_per_group;
  return bk.n % lanes<T>() == 0 && geo.out_h * geo.out_w <= max_pixels &&
         bk.nnzb >= kMinRowBlocks * rows;
}

// Pixels [p, p + P) of channels [o0, o0 + V*L) of one image: out = clamp(acc
// + bias + residual), channels at or past `valid` (a partial row) not stored.
// Each channel vector's P pixel vectors are transposed in the registers
// into L channel rows of P pixels, stored as pieces of the register.
template <typename T, int V, int P>
inline void lane_tile(const T* x, int64_t cs, const int32_t* col, const T* w, int64_t nblocks,
                      int64_t wstep, int valid, const T* bias, const T* res, T* out,
                      int64_t ohw, const OutputClamp& clamp) {
  using Vt = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  // fwd_tap with the roles swapped: the block's V weight vectors loaded, its
  // P input pixels broadcast (acc[u][v]: pixel u of channel vector v).
  Vt acc[P][V];
  for (int u = 0; u < P; ++u)
    for (int v = 0; v < V; ++v) acc[u][v] = vbcast<Vt>(T(0));
  const int64_t ahead = nblocks - kLanePrefetch;
#pragma GCC unroll 2
  for (int64_t k = 0; k < nblocks; ++k, w += wstep) {
    // A row's first tile reads each kept channel's line from memory.
    if (k < ahead) fwd_prefetch<T, 1>(x + col[k + kLanePrefetch] * cs);
    fwd_tap<T, P, V>(acc, w, x + col[k] * cs);
  }
  const bool clamped = clamp.active();
  const T lo = T(clamp.lo), hi = T(clamp.hi);
  for (int v = 0; v < V; ++v) {
    Vt r[L];
    for (int u = 0; u < L; ++u) r[u] = u < P ? acc[u][v] : vbcast<Vt>(T(0));
    transpose(r);
    const int n = std::min(L, valid - v * L);
    for (int j = 0; j < n; ++j) {
      const int64_t d = (v * L + j) * ohw;
      Vt y = r[j];
      if (bias) y += vbcast<Vt>(bias[v * L + j]);
      if (res) y += vload_lanes<Vt>(res + d, 0, P);
      vstore_lanes(out + d, clamped ? vclamp(y, lo, hi) : y, 0, P);
    }
  }
}

template <typename T>
void fwd_channel_lanes(const ConvGeometry& geo, const Block1xN& bk, const T* values,
                       const T* input, Strides4 in_s, const T* bias, const OutputClamp& clamp,
                       const T* residual, T* output, int num_threads) {
  constexpr int L = lanes<T>(), P = lane_pixels<T>();
  const int64_t ohw = geo.out_h * geo.out_w, cin_g = geo.cin_per_group();
  const int64_t rows = geo.groups * bk.rows_per_group;
  // Pixel chunks only where the rows are too few to give every thread two
  // items (whole tiles, so only the image's last chunk has a tail).
  const int64_t want = (2 * num_threads + geo.batch * rows - 1) / (geo.batch * rows);
  const int64_t nchunks = std::max<int64_t>(1, std::min(want, ohw / (4 * P)));
  const int64_t chunk = round_up((ohw + nchunks - 1) / nchunks, P);
  const int64_t per_image = rows * nchunks;
#pragma omp parallel for num_threads(num_threads) schedule(dynamic, 1)
  for (int64_t i = 0; i < geo.batch * per_image; ++i) {
    const int64_t b = i / per_image, r = i % per_image / nchunks, c = i % nchunks;
    const int64_t p0 = c * chunk, p1 = std::min(ohw, p0 + chunk);
    if (p0 >= p1) continue;
    const int64_t g = r / bk.rows_per_group, o0 = block_row_first_out(geo, bk, r);
    const int valid = block_row_valid(geo, bk, r);
    const int32_t k0 = bk.row_ptr[r];
    const int64_t nblocks = bk.row_ptr[r + 1] - k0;
    const T* x = input + b * in_s.n + g * cin_g * in_s.c;
    for (int j0 = 0; j0 < valid; j0 += kLaneVectors * L) {
      const int64_t at = (b * geo.cout + o0 + j0) * ohw;
      const T* w = values + int64_t(k0) * bk.n + j0;
      const T* bj = bias ? bias + o0 + j0 : nullptr;
      const T* res = residual ? residual + at : nullptr;
      auto tiles = [&](auto V) {
        auto tile = [&](auto Pn, int64_t p) {
          lane_tile<T, decltype(V)::value, decltype(Pn)::value>(
              x + p, in_s.c, bk.col_idx + k0, w, nblocks, bk.n, valid - j0, bj,
              res ? res + p : nullptr, output + at + p, ohw, clamp);
        };
        int64_t p = p0;
        for (; p + P <= p1; p += P) tile(std::integral_constant<int, P>{}, p);
        if (p < p1)
          with_count<P - 1>(static_cast<int>(p1 - p), [&](auto R) { tile(R, p); });
      };
      // A short row's vectors past its last channel are not computed.
      const int vecs = std::min(kLaneVectors, (valid - j0 + L - 1) / L);
      with_count<kLaneVectors>(vecs, tiles);
    }
  }
}

template <typename T>
void forward(const ConvGeometry& geo, const Block1xN& bk, const T* values,
             const T* input, Strides4 in_s, const T* bias, const OutputClamp& clamp,
             const T* residual, T* output, int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>();
  const int64_t ohw = geo.out_h * geo.out_w;
  if (geo.batch == 0 || ohw == 0 || geo.cout == 0) return;
  num_threads = threads_for(block_macs(geo, bk), num_threads);
  const int64_t cin_g = geo.cin_per_group();
  constexpr int64_t kTileMin = fwd_vectors(kFwdMaxJ) * L;

  if (reads_in_place(geo, in_s, L)) {
    if (takes_channel_lanes<T>(geo, bk)) {
      fwd_channel_lanes(geo, bk, values, input, in_s, bias, clamp, residual, output,
                        num_threads);
      return;
    }
    fwd_in_place(geo, bk, values, input, in_s, bias, clamp, residual, output, num_threads);
    return;
  }

  InputSource<T> src(geo, kFwdMaxTile * L);
  const std::vector<char> read = channels_read(geo, bk);
  const int64_t chunk =
      chunk_pixels(src.phases * cin_g, src.span, sizeof(T), kTileMin, src.wide.npix);
#pragma omp parallel num_threads(num_threads)
  {
    StoreMap map;
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(input, in_s, b0, nb, &read);
      const Wide wide = src.layout(nb);
      // Up to the last real pixel (wide.npix is rounded up to the tile).
      const int64_t npix = ((nb - 1) * wide.rh + wide.vh - 1) * wide.ww + wide.vw;
      fwd_sweep(geo, bk, values, bias, clamp, residual,
                FwdSource<T>{src.buf, src.cs, src.off.data(), src.row_first.data(),
                             static_cast<int>(src.row_first.size()), wide, npix},
                chunk, b0, map, output, num_threads);
    }
  }
}

// ---------------------------------------------------------------------------
// Grad input: the transposed conv, on the phase planes of dX over grad_out
// undilated and zero-padded (GradSource, polyphase: a phase takes only the
// taps of its parity, each at a constant offset):
//   dX[c][q] = sum over blocks (row r, column c), the phase's taps t, lanes j
//              of w[t][j] * G[o0 + j][q + off[t]].
// A register tile is C blocks of one row (C input channels) x U pixel
// vectors: per (tap, lane), U grad_out vectors loaded once and C weights
// broadcast. Items are (group, pixel chunk, input-channel block); an item
// accumulates its channels' chunk of every phase over every row in a
// thread-local buffer, then stores the real pixels, the phases of a dX row
// together: no two items write the same element.
// ---------------------------------------------------------------------------

// Blocks x pixel vectors per grad-input tile: C*U accumulators + U grad_out
// vectors + a broadcast (AVX-512: 6 x 4; AVX2 and SSE: 4 x 3, all 16
// registers: 3 loads and 4 broadcasts per 12 FMAs, where 3 x 3 took 6 per 9
// and ran ~5-10% slower, one thread, ad hoc).
constexpr int kGiC = kVecRegs >= 32 ? 6 : 4;
constexpr int gi_vectors(int C) { return (kVecRegs - 1) / (C + 1); }
constexpr int kGiU = gi_vectors(kGiC);

// dx_i[xq .. xq + U*L) += sum over taps t of `taps` and lanes j < nj of
// w_i[t * n + j] * g[j * gcs + off[t] + q ..], for C blocks i of one row;
// = rather than += for the blocks i with fresh[i] (fresh: null for none).
template <typename T, int C, int U = kGiU>
inline void gi_tile(const T* const* w, const T* g, int64_t gcs, const int64_t* off,
                    const std::vector<int>& taps, int n, int nj, T* const* dx, int64_t q,
                    int64_t xq, const bool* fresh = nullptr) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[C][U];
  for (int i = 0; i < C; ++i)
    for (int u = 0; u < U; ++u) acc[i][u] = V{};
  for (const int t : taps) {
    const T* gt = g + off[t] + q;
    for (int j = 0; j < nj; ++j, gt += gcs) {
      V gv[U];
#pragma GCC unroll 8
      for (int u = 0; u < U; ++u) gv[u] = vload<V>(gt + u * L);
#pragma GCC unroll 8
      for (int i = 0; i < C; ++i) {
        const V s = vbcast<V>(w[i][t * n + j]);
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) acc[i][u] = vfma(s, gv[u], acc[i][u]);
      }
    }
  }
  for (int i = 0; i < C; ++i)
    for (int u = 0; u < U; ++u) {
      T* const d = dx[i] + xq + u * L;
      vstore(d, fresh && fresh[i] ? acc[i][u] : vload<V>(d) + acc[i][u]);
    }
}

// A 1x1, stride-1, unpadded conv whose grad_out planes are the wide layout
// (reads_in_place) reads grad_out and accumulates into dX in place: no layout
// copy and no buffer, passes over memory that cost a 1x1 layer (few FMAs per
// byte) as much as its tiles. Items are (group, image, pixel chunk,
// input-channel block). A chunk's pixels: tiles of kGiU vectors, then as few
// whole vectors as the rest holds, then a last vector moved back to end at
// the chunk's end, accumulated apart (it overlaps pixels already summed) and
// only its new lanes stored: no read or write passes the plane.
template <typename T>
void grad_input_in_place(const ConvGeometry& geo, const Block1xN& bk, const T* values,
                         const T* grad_out, Strides4 go_s, T* grad_input, int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>(), TT = kGiU * L;
  static const std::vector<int> kTap{0};
  const int64_t hw = geo.in_h * geo.in_w, cin_g = geo.cin_per_group();
  const int64_t chunk = chunk_pixels(geo.cout_per_group() + cin_g, 0, sizeof(T), TT, hw);
  // The last chunk takes the plane's rest: a chunk of a few pixels (4 of a
  // 14x14 plane's 196, after two of 96) swept every row's blocks for them.
  const int64_t nchunks = std::max<int64_t>(1, hw / chunk), base = geo.groups * geo.batch * nchunks;
  const int64_t ncb = num_blocks(cin_g, base, num_threads, kGiC);
  const int64_t cb_len = (cin_g + ncb - 1) / ncb;
#pragma omp parallel num_threads(num_threads)
  {
    std::vector<T> tail;
    std::vector<char> written;
    struct RowSpan {
      int64_t r;
      const int32_t *lo, *hi;
    };
    std::vector<RowSpan> spans;
    Trickle next;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < base * ncb; ++item) {
      const int64_t cb = item % ncb, pc = item / ncb % nchunks;
      const int64_t b = item / ncb / nchunks % geo.batch, g = item / ncb / nchunks / geo.batch;
      const int64_t c_lo = cb * cb_len, c_hi = std::min(cin_g, c_lo + cb_len);
      if (c_lo >= c_hi) continue;
      const int64_t q0 = pc * chunk, q1 = pc + 1 == nchunks ? hw : q0 + chunk;
      const int64_t tiles_end = q0 + (q1 - q0) / TT * TT;
      const int whole = static_cast<int>((q1 - tiles_end) / L);
      const int64_t rest = (q1 - q0) % L;
      T* const x = grad_input + (b * geo.cin + g * cin_g) * hw;
      // A channel's first block sets its chunk rather than adding to it, and
      // the channels no block reaches are zeroed last: zeroing the whole
      // chunk first was a pass over dX as long as a third of the kernel.
      written.assign(c_hi - c_lo, 0);
      tail.assign((c_hi - c_lo) * L, T(0));
      const T* go = grad_out + b * go_s.n;
      // The rows with blocks in [c_lo, c_hi): each row's blocks there.
      spans.clear();
      for (int64_t r = g * bk.rows_per_group; r < (g + 1) * bk.rows_per_group; ++r) {
        const int32_t* end = bk.col_idx + bk.row_ptr[r + 1];
        const int32_t* lo = std::lower_bound(bk.col_idx + bk.row_ptr[r], end, int32_t(c_lo));
        const int32_t* hi = std::lower_bound(lo, end, int32_t(c_hi));
        if (hi > lo) spans.push_back({r, lo, hi});
      }
      const int64_t tiles = (tiles_end - q0) / TT + (whole ? 1 : 0) + (rest ? 1 : 0);
      for (size_t si = 0; si < spans.size(); ++si) {
        const auto [r, lo, hi] = spans[si];
        const int nj = block_row_valid(geo, bk, r);
        const T* g_row = go + block_row_first_out(geo, bk, r) * go_s.c;
        // The next row's grad_out over the chunk comes from memory: fetched
        // while this row runs, a step per tile.
        if (si + 1 < spans.size()) {
          const int64_t r1 = spans[si + 1].r;
          next.start(reinterpret_cast<const char*>(go + block_row_first_out(geo, bk, r1) *
                                                           go_s.c + q0),
                     nullptr, block_row_valid(geo, bk, r1), go_s.c * int64_t(sizeof(T)),
                     (q1 - q0) * int64_t(sizeof(T)), (hi - lo + kGiC - 1) / kGiC * tiles);
        } else {
          next.stop();
        }
        for (const int32_t* k = lo; k < hi; k += kGiC) {
          const int nc = static_cast<int>(std::min<int64_t>(kGiC, hi - k));
          const T* w[kGiC];
          T* dx[kGiC];
          T* dt[kGiC];
          bool fresh[kGiC];
          for (int i = 0; i < nc; ++i) {
            w[i] = values + (k - bk.col_idx + i) * bk.n;
            dx[i] = x + k[i] * hw;
            dt[i] = tail.data() + (k[i] - c_lo) * L;
            fresh[i] = !written[k[i] - c_lo];
            written[k[i] - c_lo] = 1;
          }
          with_count<kGiC>(nc, [&](auto C) {
            constexpr int CC = decltype(C)::value;
            for (int64_t q = q0; q < tiles_end; q += TT) {
              next.step();
              gi_tile<T, CC>(w, g_row, go_s.c, &kInPlaceTapOffset, kTap, bk.n, nj, dx, q, q, fresh);
            }
            if (whole) {
              next.step();
              with_count<kGiU>(whole, [&](auto U) {
                gi_tile<T, CC, decltype(U)::value>(w, g_row, go_s.c, &kInPlaceTapOffset, kTap, bk.n, nj, dx,
                                                   tiles_end, tiles_end, fresh);
              });
            }
            if (rest) {
              next.step();
              gi_tile<T, CC, 1>(w, g_row, go_s.c, &kInPlaceTapOffset, kTap, bk.n, nj, dt, q1 - L, 0);
            }
          });
        }
      }
      for (int64_t c = c_lo; c < c_hi; ++c)
        if (!written[c - c_lo]) std::fill(x + c * hw + q0, x + c * hw + q1, T(0));
      if (rest)
        for (int64_t c = c_lo; c < c_hi; ++c)
          std::copy_n(tail.data() + (c - c_lo) * L + L - rest, rest, x + c * hw + q1 - rest);
    }
  }
}

template <typename T>
void grad_input(const ConvGeometry& geo, const Block1xN& bk, const T* values,
                const T* grad_out, Strides4 go_s, T* grad_input,
                int num_threads) {
  using namespace wide;
  constexpr int L = lanes<T>(), TT = kGiU * L;
  const int64_t hw = geo.in_h * geo.in_w;
  if (geo.batch == 0 || hw == 0 || geo.cin == 0) return;
  num_threads = threads_for(block_macs(geo, bk), num_threads);
  if (reads_in_place(geo, go_s, L)) {
    grad_input_in_place(geo, bk, values, grad_out, go_s, grad_input, num_threads);
    return;
  }
  const int taps = geo.taps();
  const int64_t cin_g = geo.cin_per_group(), cout_g = geo.cout_per_group();
  GradSource<T> src(geo, TT, /*polyphase=*/true);
  const int64_t nphases = static_cast<int64_t>(src.phases.size());
  // A chunk's grad_out rows (+ the taps' span) and its dX rows stay in L2.
  const int64_t chunk =
      chunk_pixels(cout_g + nphases * cin_g, src.span, sizeof(T), TT, src.wide.npix);

#pragma omp parallel num_threads(num_threads)
  {
    T* const dxbuf = scratch_array<T>(kTileSlot, nphases * cin_g * chunk);
    std::vector<const T*> from(nphases);
    std::vector<char> written;  // per (phase, channel) of an item
    for (int64_t b0 = 0; b0 < geo.batch; b0 += src.group) {
      const int64_t nb = std::min(src.group, geo.batch - b0);
#pragma omp barrier
      src.build(grad_out, go_s, b0, nb);
      const Wide wide = src.layout(nb);
      const int64_t nchunks = (wide.npix + chunk - 1) / chunk;
      const int64_t ncb = num_blocks(cin_g, geo.groups * nchunks, num_threads, kGiC);
      const int64_t cb_len = (cin_g + ncb - 1) / ncb;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < geo.groups * nchunks * ncb; ++item) {
        const int64_t cb = item % ncb, pc = item / ncb % nchunks, g = item / ncb / nchunks;
        const int64_t c_lo = cb * cb_len, c_hi = std::min(cin_g, c_lo + cb_len);
        const int64_t q0 = pc * chunk, len = std::min(chunk, wide.npix - q0);
        if (c_lo >= c_hi) continue;
        // Phase p's channel c at dxbuf[(p * (c_hi - c_lo) + c - c_lo) * chunk].
        // Its first block sets it rather than adding to it, and one no block
        // reaches is stored as zeros: no pass zeroing the buffer first.
        const int64_t pstride = (c_hi - c_lo) * chunk;
        written.assign(nphases * (c_hi - c_lo), 0);
        const T* g_base = src.buf + g * cout_g * src.cs + q0;
        for (int64_t r = g * bk.rows_per_group; r < (g + 1) * bk.rows_per_group; ++r) {
          const int32_t* cols = bk.col_idx + bk.row_ptr[r];
          const int32_t* end = bk.col_idx + bk.row_ptr[r + 1];
          const int32_t* lo = std::lower_bound(cols, end, int32_t(c_lo));
          const int32_t* hi = std::lower_bound(lo, end, int32_t(c_hi));
          const int nj = block_row_valid(geo, bk, r);
          const T* g_row = g_base + (block_row_first_out(geo, bk, r) - g * cout_g) * src.cs;
          for (const int32_t* k = lo; k < hi; k += kGiC) {
            const int nc = static_cast<int>(std::min<int64_t>(kGiC, hi - k));
            const T* w[kGiC];
            for (int i = 0; i < nc; ++i) w[i] = values + (k - bk.col_idx + i) * taps * bk.n;
            for (int64_t p = 0; p < nphases; ++p) {
              const auto& ptaps = src.phases[p].taps;
              if (ptaps.empty()) continue;
              T* dx[kGiC];
              bool fresh[kGiC];
              for (int i = 0; i < nc; ++i) {
                dx[i] = dxbuf + p * pstride + (k[i] - c_lo) * chunk;
                char& done = written[p * (c_hi - c_lo) + k[i] - c_lo];
                fresh[i] = !done;
                done = 1;
              }
              with_count<kGiC>(nc, [&](auto C) {
                for (int64_t q = 0; q < len; q += TT)
                  gi_tile<T, decltype(C)::value>(w, g_row, src.cs, src.off.data(), ptaps, bk.n,
                                                 nj, dx, q, q, fresh);
              });
            }
          }
        }
        for (int64_t c = c_lo; c < c_hi; ++c) {
          for (int64_t p = 0; p < nphases; ++p)
            from[p] = written[p * (c_hi - c_lo) + c - c_lo]
                          ? dxbuf + p * pstride + (c - c_lo) * chunk
                          : nullptr;
          src.store(from.data(), q0, len, wide,
                    grad_input + (b0 * geo.cin + g * cin_g + c) * hw, geo.cin * hw);
        }
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

// Channels x taps per grad-weight tile: J*T accumulators, the shorter side's
// vectors held and the other's streamed (wide_dots). AVX-512: 8 x 3, so a
// 3x3 kernel is three whole tiles (4 x 6 took 6 + 3 taps, and its 3-tap
// tile ran at ~0.8 of the 6-tap one's FMA rate); AVX2 and SSE: 4 x 3, the
// same three whole tiles in 16 registers (3 input vectors held, a grad_out
// vector streamed, 12 accumulators).
constexpr int kGwJ = kVecRegs >= 32 ? 8 : 4;
constexpr int kGwT = 6;  // most taps (or blocks) per tile
constexpr int gw_taps(int j) { return std::clamp(kAccRegs / j, 1, kGwT); }
// Pixels per chunk: a tile's kGwJ grad_out rows stay in L1 (32 KiB) while
// the row's blocks stream their input rows past them.
template <typename T>
constexpr int64_t gw_chunk() {
  return std::min<int64_t>(2048, (32 << 10) / (kGwJ * int64_t(sizeof(T))));
}

// dw_t[j] += sum over wide pixels [q0, q1) of G[j][q] * X_t[q] for lanes j
// of [j0, j0 + nj) and nt input rows X_t: an input row shifted by one tap (a
// block's taps), or one block's input row each (1x1 convs: a row's blocks).
template <typename T>
inline void gw_tiles(const T* const* g, int nj, const T* const* x, T* const* dw, int nt,
                     int64_t q0, int64_t q1, const RealLanes<T>* real) {
  const T* gq[kGwJ];
  const T* xq[kGwT];
  for (int j = 0; j < kGwJ; ++j) gq[j] = g[j] + q0;
  for (int t = 0; t < nt; ++t) xq[t] = x[t] + q0;
  with_count<kGwJ>(nj, [&](auto J) {
    with_count<gw_taps(decltype(J)::value)>(nt, [&](auto TB) {
      wide_dot_tile<T, decltype(J)::value, decltype(TB)::value>(
          gq, xq, q1 - q0, real, [&](int j, int t) -> T& { return dw[t][j]; });
    });
  });
}

// Rows of N a whole number of vectors (NV of them) and enough blocks: the
// row's N channels in the vector instead, as dense backward-weight kernels
// hold output channels. Per wide pixel, NV grad_out vectors (the row's N
// channels at that pixel, from a transposed copy of the chunk) meet KB
// blocks x TB taps of input scalars, each broadcast into NV FMAs that add
// straight into dW's [t][N] vectors: no lane sums, and per pixel NV vector
// loads and KB*TB broadcasts for KB*TB*NV FMAs. The wide_dots tile loads
// J + T vectors per J*T FMAs, J of them grad_out rows that L1 cannot hold
// beside the input stream: L2-to-L1 bandwidth bound (fifteenth round).
constexpr int kGwvTaps = 3;       // taps per tile: a 3x3 kernel row
constexpr int kGwvMaxVecs = 2;    // NV: N = L (AVX-512 N = 16) or 2L (AVX2 N = 16)
constexpr int kGwvMaxBlocks = 12; // a pointer register each, beside TB indices
// Pixels per chunk: the transposed grad_out (128 KiB at N = 16) stays in L2
// (512 was no faster, and slower at stride 2).
constexpr int64_t kGwvChunk = 2048;
// Taps per tile (TB): a kernel row's three, or a 1x1 conv's one.
constexpr int gwv_tile_taps(int taps) { return taps == 1 ? 1 : kGwvTaps; }
constexpr int gwv_blocks(int nv, int tb) { return std::clamp(kAccRegs / (nv * tb), 1, kGwvMaxBlocks); }
// Fewest blocks a row takes gwv_row with: over half the accumulators. A row
// of fewer (a stem's few input channels) leaves too few to cover the FMA
// latency, where the wide_dots tile holds J x T of them whatever the row:
// the ResNet-50 stem's rows of 1-2 blocks took 1.1-1.45x the time.
constexpr int gwv_min_blocks(int nv, int taps) {
  return gwv_blocks(nv, gwv_tile_taps(taps)) / 2 + 1;
}

// dw[b*TB + t][0, NV*L) += sum over pixels q < nq of gt[q][:] * x[b][q + off[t]].
template <typename T, int NV, int KB, int TB>
inline void gwv_tile(const T* gt, const T* const* x, const int64_t* off, int64_t nq,
                     T* const* dw) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  V acc[KB * TB * NV];
  for (int i = 0; i < KB * TB * NV; ++i) acc[i] = V{};
  const T* xb[KB];
  for (int b = 0; b < KB; ++b) xb[b] = x[b];
  // Each input scalar is addressed as xb[b] + qt[t] (KB + TB registers):
  // the index is opaque to GCC, which otherwise strength-reduces the KB*TB
  // addresses into as many pointers and spills most of them.
  int64_t qt[TB];
  for (int t = 0; t < TB; ++t) qt[t] = off[t];
  for (const T* gp = gt; gp != gt + nq * NV * L; gp += NV * L) {
    // Pinned, so that the broadcast rather than this load folds into the FMAs.
    V g[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) g[v] = vpinned(vload<V>(gp + v * L));
#pragma GCC unroll 16
    for (int b = 0; b < KB; ++b)
#pragma GCC unroll 4
      for (int t = 0; t < TB; ++t) {
        const V xv = vbcast<V>(xb[b][qt[t]]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[(b * TB + t) * NV + v] = vfma(g[v], xv, acc[(b * TB + t) * NV + v]);
      }
#pragma GCC unroll 4
    for (int t = 0; t < TB; ++t) {
      ++qt[t];
      asm("" : "+r"(qt[t]));
    }
  }
  for (int i = 0; i < KB * TB; ++i)
    for (int v = 0; v < NV; ++v) vstore(dw[i] + v * L, vload<V>(dw[i] + v * L) + acc[i * NV + v]);
}

// gt[q][j] = g[j * gcs + q] for pixels q < len and rows j < n (0 for rows
// j >= valid), L x L blocks transposed in registers.
template <typename T>
inline void transpose_rows(const T* g, int64_t gcs, int valid, int64_t n, int64_t len, T* gt) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  const int64_t whole = len / L * L;
  for (int64_t j0 = 0; j0 < n; j0 += L) {
    for (int64_t q = 0; q < whole; q += L) {
      V r[L];
      for (int i = 0; i < L; ++i) r[i] = j0 + i < valid ? vload<V>(g + (j0 + i) * gcs + q) : V{};
      transpose(r);
      for (int i = 0; i < L; ++i) vstore(gt + (q + i) * n + j0, r[i]);
    }
    for (int64_t q = whole; q < len; ++q)
      for (int64_t j = j0; j < j0 + L; ++j) gt[q * n + j] = j < valid ? g[j * gcs + q] : T(0);
  }
}

// Whether a block row of N = n keeping `blocks` blocks takes gwv_row.
template <typename T>
inline bool takes_channel_vectors(int64_t n, int taps, int64_t blocks) {
  constexpr int L = lanes<T>();
  return n % L == 0 && n / L <= kGwvMaxVecs && blocks >= gwv_min_blocks(static_cast<int>(n / L), taps);
}

// One block row's dW by gwv_tile, over wide pixels [0, npix) in chunks:
// grad_out rows g (valid of them, stride gcs) transposed into a thread's
// scratch [chunk][N] (lanes past `valid` zero), the blocks k0..k1 reading
// x_g's channels at the taps' offsets `off`.
template <typename T>
void gwv_row(const Block1xN& bk, int taps, const T* x_g, int64_t xcs, const int64_t* off,
             const T* g, int64_t gcs, int valid, int64_t npix, int32_t k0, int32_t k1,
             T* grad_values) {
  const int64_t n = bk.n, chunk = kGwvChunk;
  T* const gt = wide::scratch_array<T>(wide::kTileSlot, chunk * n);
  const auto rows = [&](auto NVc, auto TBc) {
    constexpr int NV = decltype(NVc)::value, TBM = decltype(TBc)::value, KB = gwv_blocks(NV, TBM);
    for (int64_t q0 = 0; q0 < npix; q0 += chunk) {
      const int64_t len = std::min(chunk, npix - q0);
      transpose_rows(g + q0, gcs, valid, n, len, gt);
      for (int32_t k = k0; k < k1; k += KB) {
        const int nb = std::min<int>(KB, k1 - k);
        const T* x[KB];
        for (int b = 0; b < nb; ++b) x[b] = x_g + bk.col_idx[k + b] * xcs + q0;
        for (int t0 = 0; t0 < taps; t0 += TBM) {
          const int nt = std::min(TBM, taps - t0);
          T* dw[KB * TBM];
          for (int b = 0; b < nb; ++b)
            for (int t = 0; t < nt; ++t) dw[b * nt + t] = grad_values + ((k + b) * int64_t(taps) + t0 + t) * n;
          with_count<KB>(nb, [&](auto B) {
            with_count<TBM>(nt, [&](auto TB) {
              gwv_tile<T, NV, decltype(B)::value, decltype(TB)::value>(gt, x, off + t0, len, dw);
            });
          });
        }
      }
    }
  };
  with_count<kGwvMaxVecs>(static_cast<int>(n / lanes<T>()), [&](auto NVc) {
    if (taps == 1)
      rows(NVc, std::integral_constant<int, 1>{});
    else
      rows(NVc, std::integral_constant<int, kGwvTaps>{});
  });
  // A short row's lanes past `valid` summed 0 * x: zero again, even where x
  // was not finite (the format keeps them zero).
  if (valid < n)
    for (int64_t kt = int64_t(k0) * taps; kt < int64_t(k1) * taps; ++kt)
      std::fill(grad_values + kt * n + valid, grad_values + (kt + 1) * n, T(0));
}

// A 1x1, stride-1, unpadded conv whose input and grad_out planes are both
// the wide layout (reads_in_place) and large sums over them in place, image
// by image:
// no layout copies, and every pixel is real (no product the conv does not
// form, so no masked second pass). The pixels past the last whole vector of
// a plane are summed as scalars.
constexpr int64_t kGwInPlaceMin = 32;  // pixel vectors per plane

template <typename T>
void grad_weight_in_place(const ConvGeometry& geo, const Block1xN& bk, const T* input,
                          Strides4 in_s, const T* grad_out, Strides4 go_s, T* grad_values,
                          int num_threads) {
  constexpr int L = lanes<T>();
  const int64_t hw = geo.in_h * geo.in_w, cin_g = geo.cin_per_group();
  const int64_t nrows = geo.groups * bk.rows_per_group, whole = hw / L * L;
  const int64_t chunk = std::max<int64_t>(L, std::min<int64_t>(whole, gw_chunk<T>()) / L * L);
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
  for (int64_t r = 0; r < nrows; ++r) {
    const int valid = block_row_valid(geo, bk, r);
    const int64_t o0 = block_row_first_out(geo, bk, r);
    const int32_t k0 = bk.row_ptr[r], k1 = bk.row_ptr[r + 1];
    const bool vectors = takes_channel_vectors<T>(bk.n, 1, k1 - k0);
    for (int64_t b = 0; b < geo.batch; ++b) {
      const T* xb = input + b * in_s.n + (r / bk.rows_per_group) * cin_g * in_s.c;
      const T* gb = grad_out + b * go_s.n + o0 * go_s.c;
      if (vectors) {
        gwv_row(bk, 1, xb, in_s.c, &kInPlaceTapOffset, gb, go_s.c, valid, hw, k0, k1, grad_values);
        continue;
      }
      for (int64_t q0 = 0; q0 < whole; q0 += chunk) {
        const int64_t q1 = std::min(whole, q0 + chunk);
        for (int j0 = 0; j0 < valid; j0 += kGwJ) {
          const int nj = std::min(kGwJ, valid - j0);
          const T* g[kGwJ];
          for (int j = 0; j < kGwJ; ++j) g[j] = gb + (j0 + std::min(j, nj - 1)) * go_s.c;
          const int tt = gw_taps(nj);
          for (int32_t k = k0; k < k1; k += tt) {
            const int nt = std::min<int>(tt, k1 - k);
            const T* x[kGwT];
            T* dw[kGwT];
            for (int t = 0; t < nt; ++t) {
              x[t] = xb + bk.col_idx[k + t] * in_s.c;
              dw[t] = grad_values + int64_t(k + t) * bk.n + j0;
            }
            gw_tiles(g, nj, x, dw, nt, q0, q1, static_cast<const RealLanes<T>*>(nullptr));
          }
        }
      }
      for (int32_t k = k0; k < k1 && whole < hw; ++k) {
        const T* xc = xb + bk.col_idx[k] * in_s.c;
        for (int j = 0; j < valid; ++j) {
          const T* gj = gb + j * go_s.c;
          T sum = T(0);
          for (int64_t q = whole; q < hw; ++q) sum += gj[q] * xc[q];
          grad_values[int64_t(k) * bk.n + j] += sum;
        }
      }
    }
  }
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
  num_threads = threads_for(block_macs(geo, bk), num_threads);
  // In place only over large planes: each tile's sums are reduced once per
  // image there, and per image group in the wide layout (a 7x7 plane is 3
  // vectors: the reductions and the scalar tail cost more than the copies).
  if (geo.in_h * geo.in_w >= kGwInPlaceMin * L && reads_in_place(geo, in_s, L) &&
      reads_in_place(geo, go_s, L)) {
    grad_weight_in_place(geo, bk, input, in_s, grad_out, go_s, grad_values, num_threads);
    return;
  }
  const int64_t cin_g = geo.cin_per_group(), nrows = geo.groups * bk.rows_per_group;
  InputSource<T> src(geo, L);
  WideGradOut<T> gout(geo, src.wide, src.group);
  const std::vector<char> read = channels_read(geo, bk);
  const int64_t chunk = std::max<int64_t>(L, round_up(gw_chunk<T>() - src.span, L));

  // Unmasked first. A non-finite result means a non-finite input or
  // grad_out, and maybe products the conv never forms (RealLanes): then
  // again with those lanes cleared. Finite results cost one scan of them.
  for (const bool nonfinite : {false, true}) {
    if (nonfinite) {
      if (!any_nonfinite(grad_values, bk.nnzb * taps * bk.n)) break;
      std::fill(grad_values, grad_values + bk.nnzb * taps * bk.n, T(0));
    }
#pragma omp parallel num_threads(num_threads)
    {
      RealLanes<T> lanes_real;
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
          if (!nonfinite && takes_channel_vectors<T>(bk.n, taps, bk.row_ptr[r + 1] - bk.row_ptr[r])) {
            gwv_row(bk, taps, x_g, src.cs, src.off.data(), gout.buf + o0 * gout.cs, gout.cs, valid,
                    wide.npix, bk.row_ptr[r], bk.row_ptr[r + 1], grad_values);
            continue;
          }
          for (int64_t q0 = 0; q0 < wide.npix; q0 += chunk) {
            const int64_t q1 = std::min(wide.npix, q0 + chunk);
            const RealLanes<T>* real = nullptr;
            if (nonfinite) lanes_real.build(wide, q0, q1), real = &lanes_real;
            for (int j0 = 0; j0 < valid; j0 += kGwJ) {
              const T* g[kGwJ];
              const int nj = std::min(kGwJ, valid - j0);
              for (int j = 0; j < kGwJ; ++j)
                g[j] = gout.buf + (o0 + j0 + std::min(j, nj - 1)) * gout.cs;
              const T* x[kGwT];
              T* dw[kGwT];
              const int tt = gw_taps(nj);
              if (taps == 1) {  // a tile of the row's blocks
                for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; k += tt) {
                  const int nt = std::min<int>(tt, bk.row_ptr[r + 1] - k);
                  for (int t = 0; t < nt; ++t) {
                    x[t] = x_g + bk.col_idx[k + t] * src.cs + src.off[0];
                    dw[t] = grad_values + int64_t(k + t) * bk.n + j0;
                  }
                  gw_tiles(g, nj, x, dw, nt, q0, q1, real);
                }
                continue;
              }
              for (int32_t k = bk.row_ptr[r]; k < bk.row_ptr[r + 1]; ++k) {  // a block's taps
                const T* xk = x_g + bk.col_idx[k] * src.cs;
                for (int t0 = 0; t0 < taps; t0 += tt) {
                  const int nt = std::min(tt, taps - t0);
                  for (int t = 0; t < nt; ++t) {
                    x[t] = xk + src.off[t0 + t];
                    dw[t] = grad_values + (int64_t(k) * taps + t0 + t) * bk.n + j0;
                  }
                  gw_tiles(g, nj, x, dw, nt, q0, q1, real);
                }
              }
            }
          }
        }
      }
    }
  }
}
