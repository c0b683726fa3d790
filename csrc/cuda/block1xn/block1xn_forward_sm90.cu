// Hopper forward for fp16/bf16, N % 16 == 0 (sm_90a: wgmma; see
// block1xn_forward_sm90.cuh for the tile and the shared-memory stage).
// Per work item (pixel tile, block row, lane chunk) it is the implicit GEMM
//   out[128 pixels, BN lanes] = A[pixels, kept (channel, tap) pairs] * B[pairs, BN]
// with fp32 accumulators in registers. CuTe supplies the pieces it has: the
// cp.async zero-fill copies (out-of-image halo = the zero padding), the
// swizzled MN-major smem layout of B and its wgmma descriptor, and the
// m64nBNk16 RS wgmma atom with its warpgroup fences. Our own code is the
// gather (which input pieces a stage needs, and which shared element is each
// A register) and the schedule (work items, the stage ring, the epilogue).
//
// Every thread both loads and computes: with cp.async there is no copy
// engine to hand the loads to, and an A element costs one shared load, so
// a separate producer warp would only idle. The A fragment goes through
// registers (RS form) because it is a gather no descriptor can describe.
#include <atomic>
#include <utility>

#include <cute/arch/copy_sm80.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "cuda/block1xn/block1xn_forward_sm90.cuh"
#include "cuda/block1xn/block1xn_kernels.cuh"
#include "cuda/common/dtype.cuh"
#include "cuda/common/launch.cuh"
#include "cuda/common/wgmma_rs.cuh"

namespace sparsekernels {
namespace cuda {
namespace detail {
namespace block1xn {
namespace sm90 {
namespace {

namespace gmma = cute::SM90::GMMA;

// The wgmma atom: A (K-major) from registers, B MN-major from shared memory.
template <typename T, int BN>
using MmaOp = decltype(gmma::rs_op_selector<
                       std::conditional_t<std::is_same_v<T, __half>, cute::half_t, cute::bfloat16_t>,
                       std::conditional_t<std::is_same_v<T, __half>, cute::half_t, cute::bfloat16_t>,
                       float, cute::Shape<cute::_64, cute::Int<BN>, cute::_16>,
                       gmma::Major::K, gmma::Major::MN>());

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)

// cp.async of `bytes` (16, 8 or 4) from src to dst; zero-fills dst when !ok
// (src is then not read, but must still be a valid address).
__device__ __forceinline__ void copy_piece(void* dst, const void* src, bool ok,
                                           int bytes) {
  if (bytes == 16) {
    cute::SM80_CP_ASYNC_CACHEGLOBAL_ZFILL<cute::uint128_t>::copy(
        *static_cast<const cute::uint128_t*>(src), *static_cast<cute::uint128_t*>(dst), ok);
  } else if (bytes == 8) {
    cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint64_t>::copy(
        *static_cast<const uint64_t*>(src), *static_cast<uint64_t*>(dst), ok);
  } else {
    cute::SM80_CP_ASYNC_CACHEALWAYS_ZFILL<uint32_t>::copy(
        *static_cast<const uint32_t*>(src), *static_cast<uint32_t*>(dst), ok);
  }
}

// Where the current work item reads.
struct Item {
  int64_t image;          // batch index
  int oh0, ow0;           // first output pixel of the tile
  int ih_lo, x0;          // input row of halo row 0; input column of piece 0
  int col_shift;          // NCHW: halo column of iw_lo (pieces start aligned)
  int64_t row;            // block row
  int32_t first, kept;    // its first block and kept-block count
  int64_t group;
  int n0;                 // first lane of the chunk
  int stages;             // ceil(kept / kc)
};

// Static tables per stage. Being static, they also mark the sm_90a body: the
// stub built for other targets has no shared memory, which is how
// forward_sm90_available() tells the two apart.
struct StageTables {
  int64_t slot_src[kStages][kMaxKc];      // element offset of slot's channel base
  int32_t chan_off[kStages][kMaxKc + 1];  // kept channel j -> its slot offset (+ c % 8)
  int32_t slot_count[kStages];            // slots to load
};

template <int BN>
struct Smem {
  unsigned char* base;  // 1 KB aligned
  const Params& p;
  __device__ uint16_t* b(int st) const {
    return reinterpret_cast<uint16_t*>(base + st * p.b_stage_bytes);
  }
  __device__ uint16_t* a(int st) const {
    return reinterpret_cast<uint16_t*>(base + p.a_base + st * p.a_stage_bytes);
  }
  __device__ int32_t* pair_off(int st) const {
    return reinterpret_cast<int32_t*>(base + p.pair_off_base) + st * p.ksteps * 16;
  }
  __device__ int32_t* pair_j() const {
    return reinterpret_cast<int32_t*>(base + p.pair_j_base);
  }
  __device__ int32_t* tap_off() const {
    return reinterpret_cast<int32_t*>(base + p.tap_off_base);
  }
};

// Warp 0: stage s's kept channels -> slots. Consecutive kept channels with
// the same slot key (NHWC: the same 8-channel chunk) share one slot, so a
// chunk is loaded once; slot numbers are the ballot's prefix count.
__device__ __forceinline__ void decode_stage(const Params& p, const Item& it, int s,
                                             int st, StageTables& tab) {
  const int j = threadIdx.x;  // lane
  const int64_t jj = int64_t{s} * p.kc + j;
  const bool valid = j < p.kc && jj < it.kept;
  int64_t c = valid ? it.group * p.geo.cin_per_group() + p.col_idx[it.first + jj] : -1;
  const int64_t key = p.nhwc ? (c >= 0 ? c / kChunk : -1) : c;
  const int64_t prev = __shfl_up_sync(0xffffffffu, key, 1);
  const bool fresh = valid && (j == 0 || key != prev);
  const unsigned mask = __ballot_sync(0xffffffffu, fresh);
  const int slot = __popc(mask & ((2u << j) - 1u)) - 1;
  if (fresh) {
    const int64_t ch = p.nhwc ? key * kChunk : c;
    tab.slot_src[st][slot] = it.image * p.in_s.n + ch * p.in_s.c;
  }
  if (j < p.kc)
    tab.chan_off[st][j] = valid ? slot * p.slot_elems + (p.nhwc ? static_cast<int>(c % kChunk) : 0)
                                : p.kc * p.slot_elems;
  if (j == 0) tab.slot_count[st] = __popc(mask);
}

// All threads: stage s's pair offsets, then its cp.async pieces (A halo
// slots and B weight rows). Pairs past the stage's kept channels read the
// zero slot; B rows past them are zero-filled.
template <int BN>
__device__ __forceinline__ void fill_stage(const Params& p, const Item& it, int s, int st,
                                           const StageTables& tab, const Smem<BN>& sm) {
  const int kp = p.ksteps * 16;
  int32_t* pairs = sm.pair_off(st);
  for (int i = threadIdx.x; i < kp; i += kThreads)
    pairs[i] = tab.chan_off[st][sm.pair_j()[i]] + sm.tap_off()[i];

  const int per_slot = p.halo_h * p.pieces;
  const int a_pieces = tab.slot_count[st] * per_slot;
  const int bytes = p.piece_elems * 2;
  uint16_t* a = sm.a(st);
  for (int i = threadIdx.x; i < a_pieces; i += kThreads) {
    const int slot = i / per_slot;
    const int r = i - slot * per_slot;
    const int y = r / p.pieces;
    const int q = r - y * p.pieces;
    const int ih = it.ih_lo + y;
    const int iw = it.x0 + q * p.piece_step;
    const bool ok = ih >= 0 && ih < p.geo.in_h && iw >= 0 && iw < p.geo.in_w;
    const uint16_t* src = ok ? p.input + tab.slot_src[st][slot] + ih * p.in_s.h + iw * p.in_s.w
                             : p.input;
    copy_piece(a + slot * p.slot_elems + y * p.row_pitch + q * p.piece_step * p.col_pitch, src,
               ok, bytes);
  }

  const int taps = p.geo.taps();
  const int64_t k0 = int64_t{s} * p.kc * taps;  // the stage's first pair in the row
  const int64_t k_end = int64_t{it.kept} * taps;
  // Through a CuTe smem tensor: its swizzle acts on the byte address, as the
  // wgmma descriptor's does (the layout's own offsets would swizzle elements).
  uint16_t* b = sm.b(st);
  constexpr int kPiecesPerRow = BN / 8;
  for (int i = threadIdx.x; i < kp * kPiecesPerRow; i += kThreads) {
    const int k = i / kPiecesPerRow;
    const int q = i % kPiecesPerRow;
    const bool ok = k0 + k < k_end;
    const uint16_t* src =
        ok ? p.values + (int64_t{it.first} * taps + k0 + k) * p.n + it.n0 + 8 * q : p.values;
    const auto tile = cute::make_tensor(
        cute::make_smem_ptr(reinterpret_cast<cute::half_t*>(b + (k / 16) * (BN * 16))),
        BTileLayout<BN>{});
    copy_piece(&tile(8 * q, k % 16), src, ok, 16);
  }
}

// kBatch k16 steps of this warpgroup from ks on (those below ksteps): gather
// their A fragments (PTX ISA, wgmma m64nNk16 A in registers: lane (g, t) of
// warp w holds rows 16w+g and 16w+g+8, columns 2t, 2t+1, 2t+8, 2t+9;
// register r = values 2r, 2r+1), then issue their wgmmas as one group and
// wait for it. Every A register is written before the group starts: ptxas
// serialises a wgmma whose register operand is defined while an earlier one
// is in flight (C7513), so the overlap of gather and MMA comes from the other
// warpgroup, and the wait is paid once per kBatch steps.
constexpr int kBatch = 4;

template <typename T, int BN>
__device__ __forceinline__ void k_batch(const uint16_t* a_s, const int32_t* pairs, int ks,
                                        int ksteps, int pix0, int pix1, uint64_t desc,
                                        float (&acc)[BN / 2]) {
  const int t = threadIdx.x % 4;
  uint32_t a[kBatch][4];
#pragma unroll
  for (int j = 0; j < kBatch; ++j) {
    if (ks + j >= ksteps) break;
    const int2 lo = *reinterpret_cast<const int2*>(pairs + (ks + j) * 16 + 2 * t);
    const int2 hi = *reinterpret_cast<const int2*>(pairs + (ks + j) * 16 + 2 * t + 8);
    const auto pack = [&](int pix, int k0, int k1) {
      return uint32_t{a_s[pix + k0]} | (uint32_t{a_s[pix + k1]} << 16);
    };
    a[j][0] = pack(pix0, lo.x, lo.y);
    a[j][1] = pack(pix1, lo.x, lo.y);
    a[j][2] = pack(pix0, hi.x, hi.y);
    a[j][3] = pack(pix1, hi.x, hi.y);
    fence_regs(a[j]);
  }
  fence_regs(acc);
  cute::warpgroup_arrive();
#pragma unroll
  for (int j = 0; j < kBatch; ++j) {
    if (ks + j >= ksteps) break;
    wgmma_rs<MmaOp<T, BN>>(a[j], desc + (((ks + j) * kBTileBytes<BN>) >> 4), acc,
                               std::make_index_sequence<BN / 2>{});
  }
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
  fence_regs(acc);
#pragma unroll
  for (int j = 0; j < kBatch; ++j) fence_regs(a[j]);
}

// Accumulator element v of lane (g, t), warp w of warpgroup wg (PTX ISA
// wgmma D fragment) is pixel 64wg + 16w + g + 8((v>>1)&1), lane
// 8(v>>2) + 2t + (v&1) of the tile.
template <typename T, int BN>
__device__ __forceinline__ void store_tile(const Params& p, const Item& it,
                                           const float (&acc)[BN / 2]) {
  const int lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int m_base = (threadIdx.x / 128) * 64 + ((threadIdx.x / 32) % 4) * 16 + g;
  const int tw = 1 << p.tw_log2;
  // Lanes of the row that exist (a group's short last row is padded).
  const int64_t q = it.row % p.rows_per_group;
  const int64_t left = p.geo.cout_per_group() - q * p.n;
  const int64_t valid = left < p.n ? left : p.n;
  const int64_t o0 = it.group * p.geo.cout_per_group() + q * p.n + it.n0;
  const T* bias = reinterpret_cast<const T*>(p.bias);
  T* out = reinterpret_cast<T*>(p.output);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int m = m_base + 8 * h;
    const int oh = it.oh0 + (m >> p.tw_log2);
    const int ow = it.ow0 + (m & (tw - 1));
    if (oh >= p.geo.out_h || ow >= p.geo.out_w) continue;
    const int64_t px_off = it.image * p.out_s.n + oh * p.out_s.h + ow * p.out_s.w;
#pragma unroll
    for (int v = 0; v < BN / 2; ++v) {
      if (((v >> 1) & 1) != h) continue;
      const int l = 8 * (v >> 2) + 2 * t + (v & 1);
      if (it.n0 + l >= valid) continue;  // padding of a short last row
      float r = acc[v];
      if (bias != nullptr) r += Num<T>::load(bias + o0 + l);
      out[px_off + (o0 + l) * p.out_s.c] = Num<T>::store(r);
    }
  }
}

#endif  // __CUDA_ARCH_FEAT_SM90_ALL

template <typename T, int BN>
__global__ void __launch_bounds__(kThreads, 1)
    forward_sm90_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  __shared__ StageTables tab;
  extern __shared__ unsigned char smem_raw[];
  // Aligned by an offset on smem_raw itself, not an integer round trip:
  // the compiler then knows every pointer below addresses shared memory and
  // emits LDS/STS (a cast through uintptr_t made them generic 64-bit loads).
  const unsigned misalign = reinterpret_cast<uintptr_t>(smem_raw) % kSmemAlign;
  const Smem<BN> sm{smem_raw + (misalign ? kSmemAlign - misalign : 0), p};
  const int taps = p.geo.taps();
  const int kp = p.ksteps * 16;
  // Per-launch constants: the pair -> (kept channel, tap offset) split, and
  // the zero slot of every stage (never a cp.async target).
  for (int i = threadIdx.x; i < kp; i += kThreads) {
    const bool real = i < p.kc * taps;
    const int tap = i % taps;
    sm.pair_j()[i] = real ? i / taps : p.kc;
    sm.tap_off()[i] = real ? (tap / p.geo.kw) * p.geo.dil_h * p.row_pitch +
                                 (tap % p.geo.kw) * p.geo.dil_w * p.col_pitch
                           : 0;
  }
  for (int st = 0; st < kStages; ++st) {
    uint16_t* zero = sm.a(st) + p.kc * p.slot_elems;
    for (int i = threadIdx.x; i < p.slot_elems; i += kThreads) zero[i] = 0;
    if (threadIdx.x == 0) tab.chan_off[st][p.kc] = p.kc * p.slot_elems;
  }

  const int wg_row = (threadIdx.x / 128) * 64 + ((threadIdx.x / 32) % 4) * 16 +
                     (threadIdx.x % 32) / 4;
  const int tw = 1 << p.tw_log2;
  const int64_t tiles_per_image = p.tiles_h * p.tiles_w;
  // wgmma descriptor of B's first k16 tile; the others are whole 16-byte
  // multiples away, added to its start-address field.
  const uint64_t desc0 = gmma::make_gmma_desc<gmma::Major::MN>(
      cute::make_tensor(cute::make_smem_ptr(reinterpret_cast<cute::half_t*>(sm.b(0))),
                        BTileLayout<BN>{}));

  // Lane chunks vary fastest, then rows: CTAs resident together read the
  // same input halo, so it is served from L2.
  for (int64_t w = blockIdx.x; w < p.work; w += gridDim.x) {
    Item it;
    it.n0 = static_cast<int>(w % p.chunks) * BN;
    it.row = (w / p.chunks) % p.rows;
    const int64_t tile = w / p.chunks / p.rows;
    it.image = tile / tiles_per_image;
    const int64_t in_image = tile - it.image * tiles_per_image;
    it.oh0 = static_cast<int>(in_image / p.tiles_w) * (kBM >> p.tw_log2);
    it.ow0 = static_cast<int>(in_image % p.tiles_w) * tw;
    it.ih_lo = it.oh0 * p.geo.stride_h - p.geo.pad_h;
    const int iw_lo = it.ow0 * p.geo.stride_w - p.geo.pad_w;
    // NCHW pieces start on a multiple of their width (16-byte aligned, and
    // all inside or all outside the image since in_w is a multiple too).
    const int floor_lo = p.nhwc ? iw_lo
                                : (iw_lo >= 0 ? iw_lo : iw_lo - p.piece_elems + 1) /
                                      p.piece_elems * p.piece_elems;
    it.x0 = floor_lo;
    it.col_shift = iw_lo - floor_lo;
    it.group = it.row / p.rows_per_group;
    it.first = p.row_ptr[it.row];
    it.kept = p.row_ptr[it.row + 1] - it.first;
    it.stages = (it.kept + p.kc - 1) / p.kc;

    const auto pix_off = [&](int m) {
      return (m >> p.tw_log2) * p.geo.stride_h * p.row_pitch +
             (m & (tw - 1)) * p.geo.stride_w * p.col_pitch + it.col_shift;
    };
    const int pix0 = pix_off(wg_row), pix1 = pix_off(wg_row + 8);

    __syncthreads();  // the previous item's last stage is no longer read
    const auto issue = [&](int s) {
      const int st = s % kStages;
      if (s < it.stages && threadIdx.x < 32) decode_stage(p, it, s, st, tab);
      __syncthreads();
      if (s < it.stages) fill_stage(p, it, s, st, tab, sm);
      cute::cp_async_fence();  // one group per stage, empty past the end
    };
    for (int s = 0; s < kStages - 1; ++s) issue(s);

    float acc[BN / 2];
#pragma unroll
    for (int i = 0; i < BN / 2; ++i) acc[i] = 0.f;
    for (int s = 0; s < it.stages; ++s) {
      cute::cp_async_wait<kStages - 2>();
      // cp.async writes are generic-proxy writes; wgmma reads B through the
      // async proxy.
      cutlass::arch::fence_view_async_shared();
      __syncthreads();
      issue(s + kStages - 1);

      const int st = s % kStages;
      const uint16_t* a_s = sm.a(st);
      const int32_t* pairs = sm.pair_off(st);
      const uint64_t desc = desc0 + ((st * p.b_stage_bytes) >> 4);
      for (int ks = 0; ks < p.ksteps; ks += kBatch)
        k_batch<T, BN>(a_s, pairs, ks, p.ksteps, pix0, pix1, desc, acc);
    }
    cute::cp_async_wait<0>();
    store_tile<T, BN>(p, it, acc);
  }
#elif defined(__CUDA_ARCH__)
  __trap();  // never launched: forward_sm90_available() rejects such builds
#endif
}

// ---- Host side: the plan and the launch. ----

bool aligned(const void* ptr, int bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

// Fills p for lane tile BN, or returns false when this kernel does not take
// the problem (layout, alignment, or a halo too large for shared memory).
template <int BN>
bool make_plan(const ConvGeometry& geo, const Block1xN& blocks, const void* values,
               const void* input, Strides4 is, int smem_limit, Params& p) {
  p = Params{};
  p.geo = geo;
  p.n = blocks.n;
  p.rows_per_group = blocks.rows_per_group;
  p.in_s = is;
  if (!aligned(values, 16)) return false;
  // NHWC: 16-byte pieces of 8 channels; NCHW: pieces along a row as wide as
  // the row length and the pointer's alignment allow.
  if (is.c == 1 && geo.cin % kChunk == 0 && is.w % 8 == 0 && is.h % 8 == 0 &&
      is.n % 8 == 0 && aligned(input, 16)) {
    p.nhwc = 1;
    p.piece_elems = kChunk;
  } else if (is.w == 1) {
    for (int pw : {8, 4, 2}) {
      if (geo.in_w % pw == 0 && is.h % pw == 0 && is.c % pw == 0 && is.n % pw == 0 &&
          aligned(input, 2 * pw)) {
        p.piece_elems = pw;
        break;
      }
    }
    if (p.piece_elems == 0) return false;
  } else {
    return false;
  }
  p.tw_log2 = geo.out_w <= 8 ? 3 : 4;
  const int tw = 1 << p.tw_log2, th = kBM / tw;
  const int64_t halo_h = int64_t{th - 1} * geo.stride_h + int64_t{geo.kh - 1} * geo.dil_h + 1;
  const int64_t halo_w = int64_t{tw - 1} * geo.stride_w + int64_t{geo.kw - 1} * geo.dil_w + 1;
  if (halo_h > 4096 || halo_w > 4096) return false;
  p.halo_h = static_cast<int32_t>(halo_h);
  if (p.nhwc) {
    p.pieces = static_cast<int32_t>(halo_w);
    p.piece_step = 1;
    p.col_pitch = kChunk;
  } else {
    // + piece - 1: the first piece may start up to piece - 1 columns early.
    p.pieces = static_cast<int32_t>(ceil_div(halo_w + p.piece_elems - 1, p.piece_elems));
    p.piece_step = p.piece_elems;
    p.col_pitch = 1;
  }
  p.row_pitch = p.pieces * p.piece_step * p.col_pitch;
  p.slot_elems = static_cast<int32_t>(ceil_div(int64_t{p.halo_h} * p.row_pitch, 8) * 8);

  // The most kept channels per stage that fit kStages stages.
  const int taps = geo.taps();
  for (int kc = kMaxKc; kc >= 1; kc /= 2) {
    const int ksteps = static_cast<int>(ceil_div(int64_t{kc} * taps, 16));
    const int64_t b_stage = int64_t{ksteps} * kBTileBytes<BN>;
    const int64_t a_stage = ceil_div(int64_t{kc + 1} * p.slot_elems * 2, 16) * 16;
    const int64_t kp_bytes = int64_t{ksteps} * 16 * 4;
    const int64_t a_base = kStages * b_stage;
    const int64_t pair_off_base = a_base + kStages * a_stage;
    const int64_t pair_j_base = pair_off_base + kStages * kp_bytes;
    const int64_t tap_off_base = pair_j_base + kp_bytes;
    const int64_t total = tap_off_base + kp_bytes + kSmemAlign;
    if (total <= smem_limit) {
      p.kc = kc;
      p.ksteps = ksteps;
      p.b_stage_bytes = static_cast<int32_t>(b_stage);
      p.a_stage_bytes = static_cast<int32_t>(a_stage);
      p.a_base = static_cast<int32_t>(a_base);
      p.pair_off_base = static_cast<int32_t>(pair_off_base);
      p.pair_j_base = static_cast<int32_t>(pair_j_base);
      p.tap_off_base = static_cast<int32_t>(tap_off_base);
      p.smem_bytes = static_cast<int32_t>(total);
      return true;
    }
  }
  return false;
}

template <typename T, int BN>
cudaError_t launch(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                   const T* input, Strides4 is, const T* bias, T* output,
                   cudaStream_t stream) {
  const auto kernel = forward_sm90_kernel<T, BN>;
  int dev = 0, optin = 0, sms = 0;
  cudaFuncAttributes attr;
  if (cudaError_t e = cudaGetDevice(&dev); e != cudaSuccess) return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
      e != cudaSuccess)
    return e;
  if (cudaError_t e = cudaFuncGetAttributes(&attr, kernel); e != cudaSuccess) return e;
  Params p;
  if (!make_plan<BN>(geo, blocks, values, input, is,
                     optin - static_cast<int>(attr.sharedSizeBytes), p))
    return cudaErrorNotSupported;
  p.row_ptr = blocks.row_ptr;
  p.col_idx = blocks.col_idx;
  p.values = reinterpret_cast<const uint16_t*>(values);
  p.input = reinterpret_cast<const uint16_t*>(input);
  p.bias = reinterpret_cast<const uint16_t*>(bias);
  p.output = reinterpret_cast<uint16_t*>(output);
  // The public contract: output NCHW contiguous (the kernel takes any strides).
  p.out_s = {geo.cout * geo.out_h * geo.out_w, geo.out_h * geo.out_w, geo.out_w, 1};
  p.rows = geo.groups * blocks.rows_per_group;
  p.chunks = blocks.n / BN;
  p.tiles_w = ceil_div(geo.out_w, 1 << p.tw_log2);
  p.tiles_h = ceil_div(geo.out_h, kBM >> p.tw_log2);
  p.work = geo.batch * p.tiles_h * p.tiles_w * p.rows * p.chunks;
  if (p.work == 0) return cudaSuccess;
  if (cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           p.smem_bytes);
      e != cudaSuccess)
    return e;
  int per_sm = 0;
  if (cudaError_t e = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads,
                                                                     p.smem_bytes);
      e != cudaSuccess)
    return e;
  const int64_t resident = int64_t{sms} * (per_sm > 0 ? per_sm : 1);
  kernel<<<grid_for(p.work < resident ? p.work : resident), kThreads, p.smem_bytes, stream>>>(p);
  return cudaGetLastError();
}

// Per-device answer of forward_sm90_available(): 0 unknown, 1 no, 2 yes.
constexpr int kMaxDevices = 64;
std::atomic<int> g_sm90_state[kMaxDevices];

}  // namespace
}  // namespace sm90

bool forward_sm90_available() {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= sm90::kMaxDevices) {
    cudaGetLastError();  // clear it: this was only a query
    return false;
  }
  int state = sm90::g_sm90_state[dev].load(std::memory_order_relaxed);
  if (state == 0) {
    // sm_90 and sm_90a machine code both report binaryVersion 90; only the
    // sm_90a body has the static stage tables, so shared memory tells them
    // apart (the device must be 9.0 exactly: sm_90a code runs nowhere else).
    cudaFuncAttributes attr;
    cudaDeviceProp prop;
    const bool ok =
        cudaGetDeviceProperties(&prop, dev) == cudaSuccess && prop.major == 9 &&
        prop.minor == 0 &&
        cudaFuncGetAttributes(&attr, sm90::forward_sm90_kernel<__half, 16>) == cudaSuccess &&
        attr.binaryVersion == 90 && attr.sharedSizeBytes > 0;
    if (!ok) cudaGetLastError();
    state = ok ? 2 : 1;
    sm90::g_sm90_state[dev].store(state, std::memory_order_relaxed);
  }
  return state == 2;
}

template <typename T>
cudaError_t forward_sm90(const ConvGeometry& geo, const Block1xN& blocks, const T* values,
                         const T* input, Strides4 in_strides, const T* bias, T* output,
                         cudaStream_t stream) {
  // Widest lane tile dividing N (m64n64 at most: two warpgroups then hold
  // 32 accumulators per thread and A is re-gathered once per 64 lanes).
  const int32_t n = blocks.n;
  if (n % 64 == 0)
    return sm90::launch<T, 64>(geo, blocks, values, input, in_strides, bias, output, stream);
  if (n % 32 == 0)
    return sm90::launch<T, 32>(geo, blocks, values, input, in_strides, bias, output, stream);
  if (n % 16 == 0)
    return sm90::launch<T, 16>(geo, blocks, values, input, in_strides, bias, output, stream);
  return cudaErrorNotSupported;
}

#define SK_INSTANTIATE(T)                                                                  \
  template cudaError_t forward_sm90<T>(const ConvGeometry&, const Block1xN&, const T*,    \
                                       const T*, Strides4, const T*, T*, cudaStream_t);
SK_INSTANTIATE(__half)
SK_INSTANTIATE(__nv_bfloat16)
#undef SK_INSTANTIATE

}  // namespace block1xn
}  // namespace detail
}  // namespace cuda
}  // namespace sparsekernels
