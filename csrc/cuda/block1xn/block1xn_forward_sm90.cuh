// Host-visible plan of the Hopper (sm_90a) 1xN forward, block1xn_forward_sm90.cu:
// the one parameter struct the kernel reads and the tile constants, kept
// apart from the kernel so that the layout test (tests/cpp/cute_layouts.cpp)
// and scripts/emulate_block1xn_sm90.py check the very numbers the kernel uses.
//
// Tile: kBM = 128 output pixels of one image (a TH x TW patch, TW = 8 or 16)
// on the MMA's M, split over two consumer warpgroups of m64; BN lanes of one
// block row on the MMA's N. K runs over the row's kept (channel, tap) pairs,
// kc kept channels (kc * taps pairs, padded to whole k16 steps) per stage of
// a kStages-deep cp.async ring. A stage holds:
//   B  the stage's [k16 step][BN x 16] weight tiles, MN-major, swizzled
//      (values[nnzb, Kh, Kw, N] is already a dense K x N matrix per row, N
//      innermost, so it is copied as it is: no prepacking);
//   A  kc + 1 "slots" of the input halo (+1: a slot that stays zero, read by
//      padded pairs), NCHW: one kept channel's halo plane per slot;
//      NHWC: one 8-channel chunk (16 B per pixel) per slot, a chunk shared
//      by consecutive kept channels loaded once;
//   the slot sources, each kept channel's slot offset and every pair's
//      offset inside the stage, so that A element (pixel m, pair p) is
//      a[pix_off(m) + pair_off[p]]: one shared load per element.
#pragma once
#include <cstdint>
#include <type_traits>

#include <cute/atom/mma_traits_sm90_gmma.hpp>

#include "sparsekernels/block1xn.h"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace sm90 {

constexpr int kBM = 128;           // pixels per tile: 2 warpgroups x m64
constexpr int kThreads = 256;      // both warpgroups load and compute
constexpr int kStages = 3;         // cp.async ring depth
constexpr int kMaxKc = 16;         // kept channels per stage, at most
constexpr int kChunk = 8;          // NHWC channels per 16-byte piece
constexpr int kSmemAlign = 1024;   // the 128-byte swizzle repeats every 1 KB

// B tile of one k16 step: BN lanes x 16 pairs, lanes contiguous (values
// stores a row's [pairs, N] with N innermost), in the widest swizzle atom
// whose row is BN lanes (32/64/128 bytes), so each 16-byte piece copied from
// values lands whole and the wgmma reads B without bank conflicts.
template <int BN>
using BTileLayout = decltype(cute::tile_to_shape(
    std::conditional_t<
        BN == 64, cute::SM90::GMMA::Layout_MN_SW128_Atom<cute::half_t>,
        std::conditional_t<BN == 32, cute::SM90::GMMA::Layout_MN_SW64_Atom<cute::half_t>,
                           cute::SM90::GMMA::Layout_MN_SW32_Atom<cute::half_t>>>{},
    cute::Shape<cute::Int<BN>, cute::_16>{}));

template <int BN>
constexpr int kBTileBytes = BN * 16 * 2;

struct Params {
  ConvGeometry geo;
  const int32_t* row_ptr;
  const int32_t* col_idx;
  int32_t n;                 // block height N (the stride of values' rows)
  int64_t rows_per_group;
  const uint16_t* values;    // raw 16-bit storage of T
  const uint16_t* input;
  const uint16_t* bias;      // may be null
  uint16_t* output;
  Strides4 in_s, out_s;      // element strides, NCHW-indexed

  int64_t rows;              // groups * rows_per_group
  int32_t chunks;            // N / BN lane chunks per row
  int64_t tiles_w, tiles_h;  // pixel tiles per image
  int64_t work;              // tiles * rows * chunks

  int32_t tw_log2;           // TW = 1 << tw_log2, TH = kBM >> tw_log2
  int32_t nhwc;              // 1: slots are 8-channel chunks; 0: channel planes
  int32_t halo_h;            // halo rows of a tile
  int32_t pieces;            // pieces per halo row
  int32_t piece_elems;       // elements per piece (NCHW 2/4/8, NHWC 8)
  int32_t piece_step;        // input columns (iw) advanced per piece
  int32_t row_pitch;         // slot elements between halo rows
  int32_t col_pitch;         // slot elements between halo columns
  int32_t slot_elems;        // elements per slot (a multiple of 8)
  int32_t kc;                // kept channels per stage
  int32_t ksteps;            // k16 steps per stage: ceil(kc * taps / 16)

  // Shared memory carve-up, byte offsets from the 1 KB-aligned base.
  int32_t b_stage_bytes, a_stage_bytes;
  int32_t a_base, pair_off_base, pair_j_base, tap_off_base;
  int32_t smem_bytes;        // dynamic size requested (includes the alignment slack)
};

}  // namespace sm90
}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
