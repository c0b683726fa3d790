// Host-side check of the CuTe layouts the Hopper 1xN forward relies on
// (csrc/cuda/block1xn/block1xn_forward_sm90.{cuh,cu}), with CuTe's own layout
// algebra; built and run by tests/test_cute_layouts.py. It checks the
// properties the kernel's copies assume and prints every mapping, which the
// test compares with scripts/emulate_block1xn_sm90.py's formulas:
//   B <BN> <n> <k> <offset>      BTileLayout<BN>(n, k)
//   A <thread> <value> <m> <k>   GMMA::ALayout_64x16 (the RS wgmma A fragment)
//   C <BN> <thread> <value> <m> <n>  GMMA::CLayout_64xN<BN> (the accumulators)
#include <cstdio>
#include <cstdlib>

#include <cute/tensor.hpp>

#include "cuda/block1xn/block1xn_forward_sm90.cuh"

using namespace cute;
namespace sm90 = sparsekernels::cuda::detail::block1xn::sm90;

#define CHECK(cond)                                                   \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "FAILED %s:%d: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                   \
    }                                                                 \
  } while (0)

// Element offset of (n, k) in a k16 B tile as the kernel addresses it: a
// CuTe tensor over a 1 KB-aligned shared pointer, whose swizzle acts on the
// byte address (as the wgmma descriptor's does).
alignas(1024) static cute::half_t g_tile[64 * 16];

template <int BN>
int b_offset(int n, int k) {
  const auto tile = make_tensor(make_smem_ptr(g_tile), sm90::BTileLayout<BN>{});
  return static_cast<int>(&tile(n, k) - g_tile);
}

template <int BN>
void check_b() {
  const sm90::BTileLayout<BN> layout{};
  // One k16 tile is exactly BN x 16 elements, a bijection onto [0, BN*16):
  // the stage's tiles sit kBTileBytes apart with nothing between them.
  CHECK(size(layout) == BN * 16);
  CHECK(cosize(layout) == BN * 16);
  CHECK(sm90::kBTileBytes<BN> == BN * 16 * 2);
  static bool hit[BN * 16];
  for (int k = 0; k < 16; ++k) {
    for (int n = 0; n < BN; ++n) {
      const int off = b_offset<BN>(n, k);
      CHECK(off >= 0 && off < BN * 16 && !hit[off]);
      hit[off] = true;
      std::printf("B %d %d %d %d\n", BN, n, k, off);
    }
    // Each 16-byte piece of 8 lanes is contiguous and 16-byte aligned, so one
    // cp.async 16 B fills it.
    for (int n = 0; n < BN; n += 8) {
      CHECK(b_offset<BN>(n, k) % 8 == 0);
      for (int d = 1; d < 8; ++d) CHECK(b_offset<BN>(n + d, k) == b_offset<BN>(n, k) + d);
    }
  }
  // The swizzle pattern repeats every 8 rows of BN lanes (<= 1 KB): the
  // kernel's 1 KB base alignment covers it.
  CHECK(BN * 8 * 2 <= sm90::kSmemAlign);
}

template <int BN>
void print_c() {
  using C = SM90::GMMA::CLayout_64xN<BN>;
  const C c{};
  CHECK(size<0>(c) == 128 && size<1>(c) == BN / 2);  // 128 threads, BN/2 floats each
  for (int t = 0; t < 128; ++t)
    for (int v = 0; v < BN / 2; ++v) {
      const int idx = c(t, v);  // column-major (m, n) of the 64 x BN tile
      std::printf("C %d %d %d %d %d\n", BN, t, v, idx % 64, idx / 64);
    }
}

int main() {
  check_b<16>();
  check_b<32>();
  check_b<64>();
  const SM90::GMMA::ALayout_64x16 a{};
  CHECK(size<0>(a) == 128 && size<1>(a) == 8);  // 8 halves = 4 registers per thread
  for (int t = 0; t < 128; ++t)
    for (int v = 0; v < 8; ++v) {
      const int idx = a(t, v);  // column-major (m, k) of the 64 x 16 tile
      std::printf("A %d %d %d %d\n", t, v, idx % 64, idx / 64);
    }
  print_c<16>();
  print_c<32>();
  print_c<64>();
  // The stage's shared layout assumptions of make_plan.
  CHECK(sm90::kBM == 2 * 64 && sm90::kThreads == 2 * 128);
  CHECK(sm90::kMaxKc <= 32);  // one lane of warp 0 per kept channel of a stage
  std::printf("OK\n");
  return 0;
}
