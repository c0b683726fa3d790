// The ceilings of the CPU kernels' inner loops on one core, with their data
// in L1: what a register tile's instruction mix allows before memory, the
// layout or the threads take their share. Run through cpu_tile_ceiling.py,
// which compiles this file and writes its JSON; prints one JSON object.
//
//   fma_peak       independent FMAs on registers (inline assembly): the
//                  core's FMA peak, against which every other line is read
//   fwd_tile       the 1xN forward tile (block1xn_impl.h fwd_tap): J output
//                  channels x U pixel vectors, per tap U input loads and J
//                  broadcasts; 9 taps a block over 32 blocks. "aligned": every
//                  tap at a vector boundary; "shifted": the 3x3 taps one pixel
//                  apart, as the wide layout reads them
//   fwd_tile_8x3_asm  the same 8 x 3 tile in inline assembly (shifted
//                  taps), whole and without its input loads or its weight
//                  broadcasts: what each costs the FMAs
//   group_member   the pattern forward's member loop (pattern_impl.h
//                  group_chunk): a group's 4 taps x 4 input vectors held, per
//                  member 4 partial sums loaded, 4 broadcasts, 16 FMAs, 4
//                  stores; "no stores": the same without the stores
#include <immintrin.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// GFLOP/s of `flop_per_call` FLOPs per call of f, best of 5 runs of `calls`.
template <typename F>
double rate(F&& f, double flop_per_call, long calls) {
  f();
  double best = 1e30;
  for (int run = 0; run < 5; ++run) {
    const auto t0 = std::chrono::steady_clock::now();
    for (long i = 0; i < calls; ++i) f();
    best = std::min(best, seconds_since(t0));
  }
  return flop_per_call * calls / best / 1e9;
}

// n iterations of independent FMAs on registers REGS of width W ("zmm",
// "ymm"): no loads, no dependences between them.
#define SK_FMA_LOOP(REGS, W)                                    \
  "vxorps %%xmm0, %%xmm0, %%xmm0\n"                            \
  "1:\n"                                                       \
  ".irp r," REGS "\n"                                          \
  "vfmadd231ps %%" W "0, %%" W "1, %%" W "\\r\n"               \
  ".endr\n"                                                    \
  "dec %0\n"                                                   \
  "jnz 1b\n"

__attribute__((target("avx512f"))) void fma_loop_avx512(long n) {
  __asm__ volatile(SK_FMA_LOOP("4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27",
                               "zmm")
                   : "+r"(n)::"memory");
}

__attribute__((target("avx2,fma"))) void fma_loop_avx2(long n) {
  __asm__ volatile(SK_FMA_LOOP("4,5,6,7,8,9,10,11,12,13,14,15", "ymm") : "+r"(n)::"memory");
}

// GFLOP/s of a loop of `fmas` independent FMAs of `lanes` lanes an iteration.
double fma_peak(void (*loop)(long), int fmas, int lanes) {
  const long n = 20000000;
  const auto t0 = std::chrono::steady_clock::now();
  loop(n);
  return 2.0 * n * fmas * lanes / seconds_since(t0) / 1e9;
}

constexpr int kBlocks = 32, kTaps = 9, kRow = 64, kPlane = 512;

// One call: J x U accumulators over kBlocks blocks of kTaps taps, in GCC
// vectors of L floats; compiled for an ISA by the wrapper it is inlined in.
template <typename V, int J, int U>
__attribute__((always_inline)) inline void fwd_tile(const float* x, const long* off,
                                                    const float* w, float* out) {
  constexpr int L = sizeof(V) / sizeof(float);
  V acc[J][U];
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j)
#pragma GCC unroll 16
    for (int u = 0; u < U; ++u) acc[j][u] = V{};
  for (int k = 0; k < kBlocks; ++k) {
    const float* xc = x + k * kPlane;
    const float* wk = w + k * kTaps * 16;
    for (int t = 0; t < kTaps; ++t) {
      V xv[U];
#pragma GCC unroll 16
      for (int u = 0; u < U; ++u) __builtin_memcpy(&xv[u], xc + off[t] + u * L, sizeof(V));
#pragma GCC unroll 16
      for (int j = 0; j < J; ++j) {
        const V s = wk[t * 16 + j] - V{};  // a broadcast (x - 0 is x, -0 too)
#pragma GCC unroll 16
        for (int u = 0; u < U; ++u) acc[j][u] += s * xv[u];  // fused: -ffp-contract=fast
      }
    }
  }
  __builtin_memcpy(out, acc, sizeof(acc));
}

typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));

template <int J, int U>
__attribute__((target("avx512f"), noinline)) void fwd_tile_avx512(const float* x, const long* off,
                                                                    const float* w, float* out) {
  fwd_tile<V16, J, U>(x, off, w, out);
}

template <int J, int U>
__attribute__((target("avx2,fma"), noinline)) void fwd_tile_avx2(const float* x, const long* off,
                                                                  const float* w, float* out) {
  fwd_tile<V8, J, U>(x, off, w, out);
}

// The 8 x 3 tile again, in assembly with its 24 accumulators pinned to
// zmm0-23: the same loads, broadcasts and FMAs with nothing the compiler
// adds or schedules. LOADS and BCAST(j) are its input loads and weight
// broadcasts, or "" to leave zmm29-31 / zmm28 holding their last values: the
// three variants say what each costs the FMAs.
#define SK_ZERO(i) "vxorps %%xmm" #i ", %%xmm" #i ", %%xmm" #i "\n"
#define SK_STORE(i) "vmovups %%zmm" #i ", " #i "*64(%[out])\n"
#define SK_INPUTS "vmovups (%%r13), %%zmm29\nvmovups 64(%%r13), %%zmm30\nvmovups 128(%%r13), %%zmm31\n"
#define SK_BCAST(j) "vbroadcastss " #j "*4(%%r9), %%zmm28\n"
#define SK_NONE(j) ""
#define SK_ROW(BCAST, j, a, b, c)                                             \
  BCAST(j) "vfmadd231ps %%zmm29, %%zmm28, %%zmm" #a "\n"                     \
           "vfmadd231ps %%zmm30, %%zmm28, %%zmm" #b "\n"                     \
           "vfmadd231ps %%zmm31, %%zmm28, %%zmm" #c "\n"
#define SK_TILE_ASM(LOADS, BCAST)                                             \
  __asm__ volatile(                                                           \
      SK_ZERO(0) SK_ZERO(1) SK_ZERO(2) SK_ZERO(3) SK_ZERO(4) SK_ZERO(5)       \
      SK_ZERO(6) SK_ZERO(7) SK_ZERO(8) SK_ZERO(9) SK_ZERO(10) SK_ZERO(11)     \
      SK_ZERO(12) SK_ZERO(13) SK_ZERO(14) SK_ZERO(15) SK_ZERO(16) SK_ZERO(17) \
      SK_ZERO(18) SK_ZERO(19) SK_ZERO(20) SK_ZERO(21) SK_ZERO(22) SK_ZERO(23) \
      SK_ZERO(28) SK_ZERO(29) SK_ZERO(30) SK_ZERO(31)                         \
      "mov %[blocks], %%r10\nmov %[x], %%r11\nmov %[w], %%r9\n"               \
      "1:\nxor %%r12, %%r12\n"                                                \
      "2:\nmov (%[off],%%r12,8), %%r13\nlea (%%r11,%%r13,4), %%r13\n"         \
      LOADS                                                                   \
      SK_ROW(BCAST, 0, 0, 8, 16) SK_ROW(BCAST, 1, 1, 9, 17)                   \
      SK_ROW(BCAST, 2, 2, 10, 18) SK_ROW(BCAST, 3, 3, 11, 19)                 \
      SK_ROW(BCAST, 4, 4, 12, 20) SK_ROW(BCAST, 5, 5, 13, 21)                 \
      SK_ROW(BCAST, 6, 6, 14, 22) SK_ROW(BCAST, 7, 7, 15, 23)                 \
      "add $64, %%r9\ninc %%r12\ncmp %[taps], %%r12\njne 2b\n"                \
      "add %[plane], %%r11\ndec %%r10\njnz 1b\n"                              \
      SK_STORE(0) SK_STORE(1) SK_STORE(2) SK_STORE(3) SK_STORE(4) SK_STORE(5) \
      SK_STORE(6) SK_STORE(7) SK_STORE(8) SK_STORE(9) SK_STORE(10)            \
      SK_STORE(11) SK_STORE(12) SK_STORE(13) SK_STORE(14) SK_STORE(15)        \
      SK_STORE(16) SK_STORE(17) SK_STORE(18) SK_STORE(19) SK_STORE(20)        \
      SK_STORE(21) SK_STORE(22) SK_STORE(23)                                  \
      :                                                                       \
      : [x] "r"(x), [off] "r"(off), [w] "r"(w), [out] "r"(out),               \
        [blocks] "i"(kBlocks), [taps] "i"(kTaps), [plane] "i"(kPlane * 4)     \
      : "r9", "r10", "r11", "r12", "r13", "memory", "xmm0", "xmm1", "xmm2",   \
        "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",      \
        "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16", "xmm17",        \
        "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm28",        \
        "xmm29", "xmm30", "xmm31")

enum class AsmTile { kWhole, kNoInputLoads, kNoBroadcasts };

template <AsmTile kVariant>
__attribute__((target("avx512f"), noinline)) void fwd_tile_asm(const float* x, const long* off,
                                                                const float* w, float* out) {
  if constexpr (kVariant == AsmTile::kWhole)
    SK_TILE_ASM(SK_INPUTS, SK_BCAST);
  else if constexpr (kVariant == AsmTile::kNoInputLoads)
    SK_TILE_ASM("", SK_BCAST);
  else
    SK_TILE_ASM(SK_INPUTS, SK_NONE);
}

struct Member {
  int row, value;
};
constexpr int kGroups = 64, kMembers = 8, kRows = 32, kChunk = 128;

// One call: every group's members over a chunk of two 64-pixel tiles.
template <bool kStore>
__attribute__((target("avx512f"), noinline)) void group_members_avx512(
    const float* x, const int* off, const Member* mem, const float* values, float* y) {
  for (int g = 0; g < kGroups; ++g) {
    const int* o = off + 4 * g;
    const Member* m0 = mem + kMembers * g;
    for (int s = 0; s < kChunk; s += 64) {
      __m512 in[4][4];
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k)
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) in[k][v] = _mm512_loadu_ps(x + o[k] + s + v * 16);
      for (int m = 0; m < kMembers; ++m) {
        float* yr = y + m0[m].row * kChunk + s;
        const float* wv = values + m0[m].value;
        __m512 acc[4];
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) acc[v] = _mm512_loadu_ps(yr + v * 16);
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) {
          const __m512 b = _mm512_set1_ps(wv[k]);
#pragma GCC unroll 4
          for (int v = 0; v < 4; ++v) acc[v] = _mm512_fmadd_ps(b, in[k][v], acc[v]);
        }
#pragma GCC unroll 4
        for (int v = 0; v < 4; ++v) {
          if (kStore)
            _mm512_storeu_ps(yr + v * 16, acc[v]);
          else
            __asm__ volatile("" ::"v"(acc[v]));
        }
      }
    }
  }
}

}  // namespace

int main() {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f");
  std::vector<float> xbuf(kBlocks * kPlane + 4096, 1e-3f), w(kBlocks * kTaps * 16, 0.5f);
  std::vector<float> out(1024);
  float* x = xbuf.data() + 64;
  long aligned[kTaps], shifted[kTaps];
  for (int t = 0; t < kTaps; ++t) {
    aligned[t] = 64 + (t / 3) * kRow;
    shifted[t] = aligned[t] + (t % 3) - 1;
  }
  const double tile_flop = 2.0 * kBlocks * kTaps * 24;  // x lanes below

  std::vector<float> y(kRows * kChunk, 0.f), values(4096, 1e-3f);
  std::vector<Member> mem(kGroups * kMembers);
  std::vector<int> goff(4 * kGroups);
  srand(1);
  for (Member& m : mem) m = {rand() % kRows, (rand() % 1000) * 4};
  for (int g = 0; g < kGroups; ++g) {
    const int taps[4] = {0, 1, 30, 61};  // a 4-of-9 pattern on 29-wide rows
    for (int k = 0; k < 4; ++k) goff[4 * g + k] = (g % 8) * kPlane + 16 + taps[k];
  }
  const double group_flop = 2.0 * kGroups * kMembers * kChunk * 4;

  std::printf("{\"isa\": \"%s\"", avx512 ? "avx512" : "avx2");
  if (avx512) {
    std::printf(", \"fma_peak\": %.1f", fma_peak(fma_loop_avx512, 24, 16));
    std::printf(", \"fwd_tile_8x3_aligned\": %.1f",
                rate([&] { fwd_tile_avx512<8, 3>(x, aligned, w.data(), out.data()); },
                     tile_flop * 16, 4000));
    std::printf(", \"fwd_tile_8x3_shifted\": %.1f",
                rate([&] { fwd_tile_avx512<8, 3>(x, shifted, w.data(), out.data()); },
                     tile_flop * 16, 4000));
    std::printf(", \"fwd_tile_8x3_asm\": %.1f",
                rate([&] { fwd_tile_asm<AsmTile::kWhole>(x, shifted, w.data(), out.data()); },
                     tile_flop * 16, 4000));
    std::printf(", \"fwd_tile_8x3_asm_no_input_loads\": %.1f",
                rate([&] { fwd_tile_asm<AsmTile::kNoInputLoads>(x, shifted, w.data(), out.data()); },
                     tile_flop * 16, 4000));
    std::printf(", \"fwd_tile_8x3_asm_no_broadcasts\": %.1f",
                rate([&] { fwd_tile_asm<AsmTile::kNoBroadcasts>(x, shifted, w.data(), out.data()); },
                     tile_flop * 16, 4000));
    std::printf(", \"group_member\": %.1f",
                rate([&] { group_members_avx512<true>(x, goff.data(), mem.data(),
                                                      values.data(), y.data()); },
                     group_flop, 4000));
    std::printf(", \"group_member_no_stores\": %.1f",
                rate([&] { group_members_avx512<false>(x, goff.data(), mem.data(),
                                                       values.data(), y.data()); },
                     group_flop, 4000));
  } else {
    std::printf(", \"fma_peak\": %.1f", fma_peak(fma_loop_avx2, 12, 8));
  }
  std::printf(", \"fwd_tile_4x3_aligned_avx2\": %.1f",
              rate([&] { fwd_tile_avx2<4, 3>(x, aligned, w.data(), out.data()); },
                   tile_flop / 2 * 8, 8000));
  std::printf(", \"fwd_tile_4x3_shifted_avx2\": %.1f",
              rate([&] { fwd_tile_avx2<4, 3>(x, shifted, w.data(), out.data()); },
                   tile_flop / 2 * 8, 8000));
  if (avx512) std::printf(", \"fma_peak_avx2\": %.1f", fma_peak(fma_loop_avx2, 12, 8));
  std::printf("}\n");
  return y[0] > 1e30f;  // keeps the stores
}
