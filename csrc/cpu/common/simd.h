// SIMD primitives over GCC vector types, for kernels written once and
// compiled per instruction set. cpu/common/for_each_isa.inc includes this file
// inside each ISA namespace (deliberately no include guard), after defining
// kVecBytes there; <cstring> and <type_traits> are included before.
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
// v as loaded, kept in a register: GCC otherwise folds a vector's load into
// every FMA that uses it (a memory operand each), multiplying the loads of a
// register tile by its width.
template <typename V>
inline V vpinned(V v) {
  asm("" : "+v"(v));
  return v;
}
// s - 0 is exactly s for every s (even -0 and NaN), so GCC folds the
// subtraction away and keeps a single broadcast (vbroadcastss from memory);
// a lane-by-lane fill would compile to a chain of inserts.
template <typename V, typename T>
inline V vbcast(T s) {
  return s - V{};
}
// min(max(v, lo), hi) per lane, NaN kept (OutputClamp's rule: a comparison
// with NaN is false, so the lane passes through).
template <typename V, typename T>
inline V vclamp(V v, T lo, T hi) {
  const V l = vbcast<V>(lo), h = vbcast<V>(hi);
  v = v < l ? l : v;
  return v > h ? h : v;
}
// The same over n scalars of a buffer, before it is stored.
template <typename T>
inline void clamp_row(T* p, int64_t n, const OutputClamp& c) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  const T lo = T(c.lo), hi = T(c.hi);
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(p + i, vclamp(vload<V>(p + i), lo, hi));
  for (; i < n; ++i) p[i] = c(p[i]);
}

// Integer vectors of T's lane size: the masks of __builtin_shuffle.
template <typename T>
struct IVec;
template <>
struct IVec<float> {
  typedef int32_t type __attribute__((vector_size(kVecBytes)));
};
template <>
struct IVec<double> {
  typedef int64_t type __attribute__((vector_size(kVecBytes)));
};

// The elements first + 2i of a and b (a's lanes, then b's): the even
// (first 0) or odd (first 1) ones of two vectors, picked in the register.
template <typename V, typename T = std::remove_reference_t<decltype(V{}[0])>>
inline V pick_alternate(V a, V b, int first) {
  typename IVec<T>::type m;
  for (int i = 0; i < lanes<T>(); ++i) m[i] = first + 2 * i;
  return __builtin_shuffle(a, b, m);
}

// even[k] = src[2k], odd[k] = src[2k + 1] for k < pairs: a row split by a
// stride of 2, two vectors in, two out.
template <typename T>
inline void deinterleave2(const T* src, int64_t pairs, T* even, T* odd) {
  using V = typename Vec<T>::type;
  constexpr int L = lanes<T>();
  int64_t k = 0;
  for (; k + L <= pairs; k += L) {
    const V a = vload<V>(src + 2 * k), b = vload<V>(src + 2 * k + L);
    vstore(even + k, pick_alternate(a, b, 0));
    vstore(odd + k, pick_alternate(a, b, 1));
  }
  for (; k < pairs; ++k) even[k] = src[2 * k], odd[k] = src[2 * k + 1];
}

// One step of summing many vectors' lanes at once: a and b each hold
// L / B sources of B partial lanes (source s in lanes [s*B, (s+1)*B)); the
// result holds a's sources then b's, each summed to B / 2 lanes (its lower
// half plus its upper half): two shuffles and one add for two vectors.
template <int B, typename V>
inline V fold_pair(V a, V b) {
  constexpr int L = sizeof(V) / sizeof(a[0]), H = B / 2, S = L / B;
  decltype(a < b) lo, hi;  // integer vectors of matching lane width
  for (int m = 0; m < L; ++m) {
    const int src = m / H, i = m % H;
    const int at = src < S ? src * B + i : L + (src - S) * B + i;
    lo[m] = at;
    hi[m] = at + H;
  }
  return __builtin_shuffle(a, b, lo) + __builtin_shuffle(a, b, hi);
}

// The fold_pair round at width B over N vectors (the last one paired with
// zeros when N is odd), then the rounds at B/2, ..., 2.
template <int B, int N, typename V>
inline void fold_rounds(const V (&v)[N], V* out) {
  constexpr int M = (N + 1) / 2;
  V next[M];
#pragma GCC unroll 32
  for (int k = 0; k < M; ++k) next[k] = fold_pair<B>(v[2 * k], 2 * k + 1 < N ? v[2 * k + 1] : V{});
  if constexpr (B > 2)
    fold_rounds<B / 2>(next, out);
  else
    for (int k = 0; k < M; ++k) out[k] = next[k];
}

// out[i] = the sum of v[i]'s lanes, for i < N. The vectors are folded in
// pairs (fold_pair), log2(L) rounds, until each lane holds one sum: about
// 3 operations a vector, where summing each vector alone takes 2 log2(L)
// dependent ones and a scalar extract.
template <int N, typename V, typename T>
inline void vsums(const V (&v)[N], T* out) {
  constexpr int L = sizeof(V) / sizeof(T);
  // After the rounds, vector k holds the sums of v[k*L .. k*L + L) in order.
  V folded[(N + L - 1) / L];
  fold_rounds<L>(v, folded);
  std::memcpy(out, folded, N * sizeof(T));
}

// One butterfly stage of an in-register transpose: swaps the B-bit of the
// row and column index between rows a and b (= row a + B).
template <int B, typename V>
inline void swap_stage(V& a, V& b) {
  constexpr int L = sizeof(V) / sizeof(a[0]);
  decltype(a < b) lo, hi;  // integer vectors of matching lane width
  for (int k = 0; k < L; ++k) {
    lo[k] = (k & B) ? L + k - B : k;
    hi[k] = (k & B) ? L + k : k + B;
  }
  const V na = __builtin_shuffle(a, b, lo), nb = __builtin_shuffle(a, b, hi);
  a = na, b = nb;
}

// r[i][k] -> r[k][i] for an L x L block: log2(L) stages of L shuffles.
template <int B, typename V, int L>
inline void transpose_stages(V (&r)[L]) {
  if constexpr (B >= 1) {
    for (int i = 0; i < L; ++i)
      if (!(i & B)) swap_stage<B>(r[i], r[i + B]);
    transpose_stages<B / 2>(r);
  }
}
template <typename V, int L>
inline void transpose(V (&r)[L]) {
  transpose_stages<L / 2>(r);
}
