// Design probe: the main loops of a proposed Hopper 1xN forward and
// grad-weight (benchmarks/gpu_kernels.md, "The ldmatrix design"), compiled
// for sm_90a so that their SASS can be counted (benchmarks/cuda_sm90_counts.py
// --probe) before the kernels are written, and timed on a GPU by
// gpu_loop_probe_run.cu (benchmarks/run_gpu.sh). Only the loops are here:
// shared memory is taken as already filled (the copy engine's work, the
// epilogue and the scheduling are estimated in gpu_design_model.py).
//
// Why: the current Hopper forward gathers A one 2-byte element at a time
// (8 LDS.U16, 4 PRMT and ~30 address instructions per k16 step), which
// gpu_model.py finds issue-bound at a third of what the targets need.
// Here every A fragment of a k16 step is one ldmatrix.x4: ldmatrix takes a
// separate 16-byte row address from each lane, so the 16 K rows of a step
// can be any kept (channel, tap) pairs, as long as each row's 8 elements
// are contiguous and 16-byte aligned in shared memory. A tap shifts the
// halo by kw columns, so the halo of each kept channel is held in Kw copies
// (copy kw loaded by the copy engine starting kw columns further right):
// element (pixel x, tap kw) is then column x of copy kw, and runs of 8
// pixels start aligned. A warpgroup keeps 4 m64 tiles, so each B tile is
// read by 4 wgmmas; ptxas serialises a wgmma whose register operand is
// written while an earlier one is in flight (C7513), so a batch's A
// registers are all loaded before its wgmmas are issued, and the other
// warpgroup's batch overlaps the loads.
//
// Forward (per warpgroup: 4 m64 tiles of output pixels x one block row of
// BN = 32 lanes; K = the row's kept (channel, tap) pairs, 16 channels = 9
// k16 steps a stage). A is MN-major in shared memory (a K row is 8 pixels),
// so ldmatrix.trans; lane l gives K row (l % 8) + 8 (l / 16) of the step
// (its slot, kernel row and copy: a per-lane offset per step) plus the
// tile's pixel run (l / 8) % 2: one add and one LDSM per tile and step.
//
// Grad-weight (per warpgroup: 4 m64 tiles of one block row's kept (channel,
// tap) rows x BN = 32 lanes; K = pixels, a k16 step 16 pixels of one output
// row). A is K-major (a row's 8 pixels contiguous in its channel's copy for
// the tap's column), so plain ldmatrix, each lane's address its row's base
// plus an immediate per step. B is grad_out's [16 pixels x 32 lanes] tile
// (NHWC: lanes contiguous), MN-major.
#include <cute/arch/copy_sm75.hpp>
#include <cute/arch/mma_sm90.hpp>
#include <cute/atom/mma_traits_sm90_gmma.hpp>
#include <cute/tensor.hpp>
#include <cutlass/arch/barrier.h>

#include "cuda/block1xn/block1xn_forward_sm90.cuh"  // BTileLayout: the B tile's swizzled layout
#include "cuda/common/wgmma_rs.cuh"

namespace probe {

namespace gmma = cute::SM90::GMMA;
constexpr int kBN = 32;
constexpr int kMT = 4;  // m64 tiles per warpgroup
using Op = decltype(gmma::rs_op_selector<cute::bfloat16_t, cute::bfloat16_t, float,
                                         cute::Shape<cute::_64, cute::Int<kBN>, cute::_16>,
                                         gmma::Major::K, gmma::Major::MN>());
constexpr int kBTileBytes = kBN * 16 * 2;  // one k16 step's B tile

// Per-lane values the real kernel computes once per work item, here read
// from global memory so that the compiler cannot fold them.
struct Lane {
  int32_t off[20];
};

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
using sparsekernels::cuda::detail::fence_regs;
using sparsekernels::cuda::detail::wgmma_rs;

__device__ __forceinline__ void ldsm_t(const unsigned char* p, uint32_t (&a)[4]) {
  cute::SM75_U16x8_LDSM_T::copy(*reinterpret_cast<const cute::uint128_t*>(p), a[0], a[1], a[2], a[3]);
}
__device__ __forceinline__ void ldsm(const unsigned char* p, uint32_t (&a)[4]) {
  cute::SM75_U32x4_LDSM_N::copy(*reinterpret_cast<const cute::uint128_t*>(p), a[0], a[1], a[2], a[3]);
}

template <int N>
__device__ __forceinline__ void store_acc(float* out, float (&acc)[kMT][N]) {
  float s = 0.f;
#pragma unroll
  for (int m = 0; m < kMT; ++m)
#pragma unroll
    for (int v = 0; v < N; ++v) s += acc[m][v];
  out[threadIdx.x] = s;
}
#endif

// Shared memory: the A ring, then the B tiles, then the ring's barriers.
constexpr int kStages = 3;          // ring depth
constexpr int kStageBytes = 32768;  // the halo copies of one stage
constexpr int kBOffset = kStages * kStageBytes;
constexpr int kBBytes = 48 * 1024;  // B tiles of every stage (and grad-weight's tap shifts)
constexpr int kSmemBytes = kBOffset + kBBytes + 2 * kStages * 8;
constexpr int kFwdSteps = 9;        // forward: 16 kept channels x 9 taps = 9 k16 steps a stage
constexpr int kGwSteps = 8;         // grad-weight: 128 pixels = 8 k16 steps a stage
constexpr int kTaps = 9;            // 3 x 3
constexpr int kBatch = 3;           // k16 steps whose A registers are loaded at once

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The steps b .. b + kBatch - 1 (those below kSteps) x kMT tiles of wgmma
// on loaded A registers, then wait: the B tile of a step serves all kMT tiles.
template <int kSteps>
__device__ __forceinline__ void mma_batch(uint32_t (&a)[kBatch][kMT][4], uint64_t desc, int b,
                                          float (&acc)[kMT][kBN / 2]) {
#pragma unroll
  for (int m = 0; m < kMT; ++m) fence_regs(acc[m]);
  cute::warpgroup_arrive();
#pragma unroll
  for (int j = 0; j < kBatch; ++j)
#pragma unroll
    for (int m = 0; m < kMT; ++m)
      if (b + j < kSteps)
        wgmma_rs<Op>(a[j][m], desc + (((b + j) * kBTileBytes) >> 4), acc[m],
              std::make_index_sequence<kBN / 2>{});
  cute::warpgroup_commit_batch();
  cute::warpgroup_wait<0>();
#pragma unroll
  for (int m = 0; m < kMT; ++m) fence_regs(acc[m]);
}
#endif

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// The ring's handshake as the real kernel would pay it per stage: wait for
// the copy engine's transaction barrier, release the slot when done. The
// counted loops have it (kRing); the timed ones (gpu_loop_probe_run.cu),
// with no producer to signal it, run without.
// bars: the kStages "full" barriers, then the kStages "empty" ones.
template <bool kRing>
__device__ __forceinline__ void acquire(unsigned char* bars, int st) {
  if (kRing) {
    auto* full = reinterpret_cast<uint64_t*>(bars);
    cutlass::arch::ClusterTransactionBarrier::wait(&full[st % kStages], (st / kStages) & 1);
  }
}
template <bool kRing>
__device__ __forceinline__ void release(unsigned char* bars, int st) {
  if (kRing && threadIdx.x % 128 == 0) {
    auto* empty = reinterpret_cast<uint64_t*>(bars) + kStages;
    cutlass::arch::ClusterBarrier::arrive(&empty[st % kStages]);
  }
}

// The wgmma descriptor of a B tile at b (the real kernel's layout).
__device__ __forceinline__ uint64_t b_desc(unsigned char* b) {
  return gmma::make_gmma_desc<gmma::Major::MN>(cute::make_tensor(
      cute::make_smem_ptr(reinterpret_cast<cute::half_t*>(b)),
      sparsekernels::cuda::detail::block1xn::sm90::BTileLayout<kBN>{}));
}
#endif

template <bool kRing>
__global__ void __launch_bounds__(256, 1)
    forward_ldsm_loop(const Lane* __restrict__ lanes, int stages, float* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint64_t desc0 = b_desc(smem + kBOffset);
  const Lane& l = lanes[threadIdx.x];
  // run[m]: tile m's pixel run for this lane; krow[j]: step j's K row for
  // this lane (slot, kernel row, copy), offsets in the stage.
  int32_t run[kMT], krow[kFwdSteps];
#pragma unroll
  for (int i = 0; i < kMT; ++i) run[i] = l.off[i];
#pragma unroll
  for (int i = 0; i < kFwdSteps; ++i) krow[i] = l.off[kMT + i];
  float acc[kMT][kBN / 2] = {};
  for (int st = 0; st < stages; ++st) {
    acquire<kRing>(smem + kBOffset + kBBytes, st);
    const unsigned char* a_s = smem + (st % kStages) * kStageBytes;
    const uint64_t desc = desc0 + (((st % kStages) * kFwdSteps * kBTileBytes) >> 4);
#pragma unroll
    for (int b = 0; b < kFwdSteps; b += kBatch) {
      uint32_t a[kBatch][kMT][4];
#pragma unroll
      for (int j = 0; j < kBatch; ++j)
#pragma unroll
        for (int m = 0; m < kMT; ++m) {
          ldsm_t(a_s + krow[b + j] + run[m], a[j][m]);
          fence_regs(a[j][m]);
        }
      mma_batch<kFwdSteps>(a, desc, b, acc);
    }
    release<kRing>(smem + kBOffset + kBBytes, st);
  }
  store_acc(out, acc);
#endif
}


// Grad-weight: one m64 tile (64 kept channels of a block row) per
// warpgroup, all 9 taps: for a k16 step (16 input pixels) the A fragment is
// loaded once and serves 9 wgmmas, one per tap, whose B is the grad_out
// tile shifted by the tap (a descriptor offset).
template <bool kRing>
__global__ void __launch_bounds__(256, 1)
    grad_weight_shift_loop(const Lane* __restrict__ lanes, int stages, int32_t tap_pitch, float* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint64_t desc0 = b_desc(smem + kBOffset);
  const Lane& l = lanes[threadIdx.x];
  const int32_t row = l.off[0];  // this lane's channel row and half of the step's pixels
  float acc[kTaps][kBN / 2] = {};
  for (int st = 0; st < stages; ++st) {
    acquire<kRing>(smem + kBOffset + kBBytes, st);
    const unsigned char* a_s = smem + (st % kStages) * kStageBytes;
    const uint64_t desc = desc0 + (((st % kStages) * kGwSteps * 16 * kBN * 2) >> 4);
#pragma unroll
    for (int k = 0; k < kGwSteps; ++k) {
      uint32_t a[4];
      ldsm(a_s + row + k * 32, a);  // 16 pixels further: an immediate
      fence_regs(a);
#pragma unroll
      for (int t = 0; t < kTaps; ++t) fence_regs(acc[t]);
      cute::warpgroup_arrive();
      // Tap (kh, kw) reads grad_out (kh - 1) rows and (kw - 1) pixels
      // back: whole 64-byte K rows of the swizzled tile, so only the start
      // address moves.
#pragma unroll
      for (int t = 0; t < kTaps; ++t)
        wgmma_rs<Op>(a, desc + ((k * 16 * kBN * 2 + (t / 3) * tap_pitch + (t % 3) * kBN * 2) >> 4),
                     acc[t],
              std::make_index_sequence<kBN / 2>{});
      cute::warpgroup_commit_batch();
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int t = 0; t < kTaps; ++t) fence_regs(acc[t]);
    }
    release<kRing>(smem + kBOffset + kBBytes, st);
  }
  float s = 0.f;
#pragma unroll
  for (int t = 0; t < kTaps; ++t)
#pragma unroll
    for (int v = 0; v < kBN / 2; ++v) s += acc[t][v];
  out[threadIdx.x] = s;
#endif
}

// Grad-input: M = 64 output pixels a warpgroup, N = input channels in
// groups of 8 (kGroups groups, 4 accumulators a thread each), K = a block
// row's 32 lanes. Per block row and tap, each warp loads grad_out's
// [16 pixels x 32 lanes] fragment once (two ldmatrix.x4: a pixel's lanes are
// 64 contiguous bytes, and a tap shifts whole pixels) and issues two
// m64n8k16 wgmmas for every group the row's mask marks (a group is computed
// for a row when any of its channels keeps the row).
constexpr int kGroups = 16;
constexpr int kGiStageBytes = 8192;                    // a row's grad_out halo
constexpr int kGiBOffset = kStages * kGiStageBytes;
constexpr int kGiBRowBytes = kTaps * kGroups * 2 * 256;  // a row's [32 x 8] B tiles
constexpr int kGiSmemBytes = kGiBOffset + 2 * kGiBRowBytes + 2 * kStages * 8;
using OpN8 = decltype(gmma::rs_op_selector<cute::bfloat16_t, cute::bfloat16_t, float,
                                           cute::Shape<cute::_64, cute::_8, cute::_16>,
                                           gmma::Major::K, gmma::Major::K>());

template <bool kRing>
__global__ void __launch_bounds__(256, 1)
    grad_input_group_loop(const Lane* __restrict__ lanes, int rows, const uint32_t* __restrict__ masks,
                          float* out) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(1024) unsigned char smem[];
  const uint64_t desc0 = b_desc(smem + kGiBOffset);
  const Lane& l = lanes[threadIdx.x];
  const int32_t pix = l.off[0];  // this lane's pixel row of grad_out and its 16-byte lane chunk
  float acc[kGroups][4] = {};
  for (int r = 0; r < rows; ++r) {
    acquire<kRing>(smem + kGiBOffset + 2 * kGiBRowBytes, r);
    const unsigned char* a_s = smem + (r % kStages) * kGiStageBytes;
    const uint32_t mask = masks[r];  // the row's groups: the same for every thread
    const uint64_t desc = desc0 + (((r % 2) * kGiBRowBytes) >> 4);  // the row's B tiles: a ring of 2
#pragma unroll
    for (int t = 0; t < kTaps; ++t) {
      uint32_t a[2][4];
      ldsm(a_s + pix + (t / 3) * 1920 + (t % 3) * 64, a[0]);  // the tap's pixel shift: an immediate
      ldsm(a_s + pix + (t / 3) * 1920 + (t % 3) * 64 + 32, a[1]);
      fence_regs(a[0]);
      fence_regs(a[1]);
#pragma unroll
      for (int g = 0; g < kGroups; ++g) fence_regs(acc[g]);
      cute::warpgroup_arrive();
#pragma unroll
      for (int g = 0; g < kGroups; ++g)
        if (mask >> g & 1)
#pragma unroll
          for (int k = 0; k < 2; ++k)
            OpN8::fma(a[k][0], a[k][1], a[k][2], a[k][3],
                      desc + ((((t * kGroups + g) * 2 + k) * 256) >> 4), acc[g][0], acc[g][1], acc[g][2],
                      acc[g][3], gmma::ScaleOut::One);
      cute::warpgroup_commit_batch();
      cute::warpgroup_wait<0>();
#pragma unroll
      for (int g = 0; g < kGroups; ++g) fence_regs(acc[g]);
    }
    release<kRing>(smem + kGiBOffset + 2 * kGiBRowBytes, r);
  }
  float s = 0.f;
#pragma unroll
  for (int g = 0; g < kGroups; ++g) s += acc[g][0] + acc[g][1] + acc[g][2] + acc[g][3];
  out[threadIdx.x] = s;
#endif
}

// fp32 with TF32 off, N = 4 (CUDA cores): a thread computes a run of 8
// output pixels x the block row's 4 lanes. Per kept channel and kernel row
// it loads the 10 input columns the 3 taps span (two LDS.128 and one
// LDS.64: runs start at multiples of 8, so the loads are aligned) and the
// row's 3 taps x 4 lanes of weights (three LDS.128, one address for the
// whole warp: a broadcast), for 3 x 8 x 4 = 96 FFMA.
constexpr int kRun = 8;

__global__ void __launch_bounds__(256)
    forward_fp32_window_loop(const Lane* __restrict__ lanes, int channels, int reps, float* out) {
  extern __shared__ __align__(16) float fsmem[];
  const Lane& l = lanes[threadIdx.x];
  const float* x_s = fsmem + l.off[0];            // this thread's run in halo row 0 of slot 0
  const float4* w_s = reinterpret_cast<const float4*>(fsmem + l.off[1]);  // the row's weights
  const int plane = l.off[2], pitch = l.off[3];   // floats between channel slots / halo rows
  float acc[kRun][4] = {};
  for (int rep = 0; rep < reps; ++rep) {  // the timed run's repetitions over the same channels
    for (int c = 0; c < channels; ++c) {
#pragma unroll
      for (int kh = 0; kh < 3; ++kh) {
        const float* row = x_s + c * plane + kh * pitch;
        const float4 x0 = *reinterpret_cast<const float4*>(row);
        const float4 x1 = *reinterpret_cast<const float4*>(row + 4);
        const float2 x2 = *reinterpret_cast<const float2*>(row + 8);
        const float x[10] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w, x2.x, x2.y};
#pragma unroll
        for (int kw = 0; kw < 3; ++kw) {
          const float4 w = w_s[(c * 3 + kh) * 3 + kw];
#pragma unroll
          for (int i = 0; i < kRun; ++i) {
            acc[i][0] = fmaf(x[i + kw], w.x, acc[i][0]);
            acc[i][1] = fmaf(x[i + kw], w.y, acc[i][1]);
            acc[i][2] = fmaf(x[i + kw], w.z, acc[i][2]);
            acc[i][3] = fmaf(x[i + kw], w.w, acc[i][3]);
          }
        }
      }
    }
  }
  float s = 0.f;
#pragma unroll
  for (int i = 0; i < kRun; ++i) s += acc[i][0] + acc[i][1] + acc[i][2] + acc[i][3];
  out[threadIdx.x] = s;
}

// The counted instantiations: with the ring's handshake.
template __global__ void forward_ldsm_loop<true>(const Lane*, int, float*);
template __global__ void grad_weight_shift_loop<true>(const Lane*, int, int32_t, float*);
template __global__ void grad_input_group_loop<true>(const Lane*, int, const uint32_t*, float*);

}  // namespace probe
