// Per-ISA helpers for sweeps over the wide layouts of wide_layout.h,
// included by cpu/common/for_each_isa.inc into each ISA namespace after
// simd.h (deliberately no include guard); wide_layout.h is included before.

// Per pixel of a range of a wide layout, whether it is a real pixel, as an
// all-ones or zero lane (integers of T's width, loaded as a vector: a
// std::vector of vector types would lose their alignment).
//
// Why: a grad-weight sweep multiplies grad_out, zero at pixels that are not
// real, by the input shifted by a tap, which there may hold a real input
// value the conv never pairs with that tap; a non-finite one would turn
// 0 * x into NaN. When the input has any (any_nonfinite), keep() clears
// those lanes of the input first.
template <typename T>
struct RealLanes {
  using V = typename Vec<T>::type;
  using M = decltype(V{} < V{});  // integer vector of the same lanes
  using Lane = typename std::conditional<sizeof(T) == 4, int32_t, int64_t>::type;
  std::vector<Lane> mask;

  // Pixels [q0, q1) of `w`, rounded up to whole vectors.
  void build(const wide::Wide& w, int64_t q0, int64_t q1) {
    mask.assign(round_up(q1 - q0, lanes<T>()), 0);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t row = q / w.ww, b = row / w.rh;
      const bool real = b < w.nb && row - b * w.rh < w.vh && q - row * w.ww < w.vw;
      mask[q - q0] = real ? Lane(-1) : Lane(0);
    }
  }
  // Vector v with the lanes of pixel vector i (from the range's start) that
  // are not real cleared.
  V keep(V v, int64_t i) const { return (V)((M)v & vload<M>(mask.data() + i * lanes<T>())); }
};

// acc[r*C + c] += sum over the pixel vectors [0, nq) of g[r][q] * x[c][q],
// lane-wise (R grad_out rows x C input rows: R*C FMAs per R + C loads); the
// x lanes that are not real cleared first when `real` is given (kMasked).
template <typename T, int R, int C, bool kMasked>
inline void wide_dots(const T* const* g, const T* const* x, int64_t nq, const RealLanes<T>* real,
                      typename Vec<T>::type (&acc)[R * C]) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  for (int64_t q = 0; q < nq; q += L) {
    // The shorter side's vectors are held while the other side's stream
    // past them: min(R, C) + 1 + R*C registers. A streamed vector is pinned
    // (vpinned): unpinned, GCC folds its load into each FMA that uses it.
    if constexpr (R <= C) {
      V gv[R];
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) gv[r] = vload<V>(g[r] + q);
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        V xv = vpinned(vload<V>(x[c] + q));
        if constexpr (kMasked) xv = real->keep(xv, q / L);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) acc[r * C + c] = vfma(gv[r], xv, acc[r * C + c]);
      }
    } else {
      V xv[C];
#pragma GCC unroll 16
      for (int c = 0; c < C; ++c) {
        xv[c] = vload<V>(x[c] + q);
        if constexpr (kMasked) xv[c] = real->keep(xv[c], q / L);
      }
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const V gv = vpinned(vload<V>(g[r] + q));
#pragma GCC unroll 16
        for (int c = 0; c < C; ++c) acc[r * C + c] = vfma(gv, xv[c], acc[r * C + c]);
      }
    }
  }
}

// wide_dots from zero, then dw[r][c] (given by dw_at(r, c)) += the lane sums.
template <typename T, int R, int C, typename At>
inline void wide_dot_tile(const T* const* g, const T* const* x, int64_t nq,
                          const RealLanes<T>* real, At&& dw_at) {
  typename Vec<T>::type acc[R * C];  // [r][c]
  for (int i = 0; i < R * C; ++i) acc[i] = typename Vec<T>::type{};
  if (real)
    wide_dots<T, R, C, true>(g, x, nq, real, acc);
  else
    wide_dots<T, R, C, false>(g, x, nq, nullptr, acc);
  T sum[R * C];
  vsums(acc, sum);
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < C; ++c) dw_at(r, c) += sum[r * C + c];
}
