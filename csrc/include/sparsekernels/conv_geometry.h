// Shapes and index math shared by every backend. Plain C++: no torch, no CUDA
// headers, so the CPU kernels, the CUDA kernels and the bindings agree on one
// definition and nvcc can compile-check everything without torch.
#pragma once
#include <cstdint>
#include <limits>

#if defined(__CUDACC__)
#define SK_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SK_HOST_DEVICE inline
#endif

namespace sparsekernels {

// Geometry of one 2-D convolution. Padding is symmetric (callers turn
// asymmetric 'same' padding into an explicit pad of the input first).
struct ConvGeometry {
  int64_t batch;        // N of the activation
  int64_t cin;          // all input channels (groups * cin_per_group)
  int64_t in_h, in_w;
  int64_t cout;         // all output channels (groups * cout_per_group)
  int64_t out_h, out_w;
  int32_t kh, kw;
  int32_t stride_h, stride_w;
  int32_t pad_h, pad_w;
  int32_t dil_h, dil_w;
  int32_t groups;

  SK_HOST_DEVICE int64_t cin_per_group() const { return cin / groups; }
  SK_HOST_DEVICE int64_t cout_per_group() const { return cout / groups; }
  SK_HOST_DEVICE int32_t taps() const { return kh * kw; }
};

// Strides (in elements) of a 4-D NCHW-indexed tensor; lets kernels read
// channels_last or otherwise non-contiguous activations without a copy.
struct Strides4 {
  int64_t n, c, h, w;
};

// The forward's epilogue after the bias: out = min(max(out, lo), hi), NaN
// kept (as torch.clamp and relu keep it). A fused ReLU is (0, inf), ReLU6
// (0, 6); the default clamps nothing.
struct OutputClamp {
  double lo = -std::numeric_limits<double>::infinity();
  double hi = std::numeric_limits<double>::infinity();

  bool active() const {
    return lo > -std::numeric_limits<double>::infinity() ||
           hi < std::numeric_limits<double>::infinity();
  }
  // A comparison with NaN is false: a NaN passes through.
  template <typename T>
  T operator()(T v) const {
    v = v < T(lo) ? T(lo) : v;
    return v > T(hi) ? T(hi) : v;
  }
};

}  // namespace sparsekernels
