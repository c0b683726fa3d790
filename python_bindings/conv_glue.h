// Tensor glue every sparsity kind's bindings share: the checks each
// tensor-level entry point runs before a kernel sees its arguments (integers
// bounded where they enter, so nothing narrows silently into the int32 fields
// of ConvGeometry; shapes consistent; index tensors of the right type and
// length), tensor -> kernel argument conversions, and the device dispatch of
// one pass. Errors are ValueError / TypeError in Python and name the argument.
#pragma once
#include <torch/extension.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "sparsekernels/conv_geometry.h"
#ifdef SK_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include "cuda/common/dtype.h"
#endif

namespace sparsekernels {
namespace glue {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

// A dtype as Python spells it (torch.float32): a message names it as the
// Python checks do, whichever route raised it.
inline std::string dtype_name(at::ScalarType t) {
  return "torch." + std::string(c10::getDtypeNames(t).first);
}

// `t` of `like`'s dtype (else a TypeError) and device (else a ValueError),
// each named `name`.
inline void check_like(const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), name, ": expected dtype ",
                   dtype_name(like.scalar_type()), ", got ", dtype_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.device() == like.device(), name, ": expected a tensor on ",
                    like.device(), ", got ", t.device());
}

// `t` of dtype int32 (index tensors), else a TypeError named `name`.
inline void check_int32(const char* name, const at::Tensor& t) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt, name, ": expected dtype torch.int32, got ",
                   dtype_name(t.scalar_type()));
}

// `value` as an int32 in [lo, hi]; anything else is a ValueError naming `name`.
inline int32_t bounded_int32(const char* name, int64_t value, int64_t lo,
                             int64_t hi = kInt32Max) {
  TORCH_CHECK_VALUE(value >= lo && value <= hi, name, ": expected an integer in [", lo,
                    ", ", hi, "], got ", value);
  return static_cast<int32_t>(value);
}

inline void check_pair(const char* name, const std::vector<int64_t>& v) {
  TORCH_CHECK_VALUE(v.size() == 2, name, ": expected 2 entries, got ", v.size());
}

inline void check_4d(const char* name, const at::Tensor& t) {
  TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected a 4-D tensor, got shape ", t.sizes());
}

// An int32, contiguous, 1-D index tensor of `numel` entries on `device`.
inline void check_index_tensor(const char* name, const at::Tensor& t, int64_t numel,
                               const at::Device& device) {
  check_int32(name, t);
  TORCH_CHECK_VALUE(t.dim() == 1 && t.numel() == numel, name, ": expected shape [", numel,
                    "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, ": expected a contiguous tensor");
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected a tensor on ", device, ", got ",
                    t.device());
}

inline void check_activation(const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected a 4-D tensor, got shape ", t.sizes());
  check_like(name, t, like);
}

// An optional bias: [cout] of `like`'s dtype and device.
inline void check_bias(const c10::optional<at::Tensor>& bias, const at::Tensor& like,
                       int64_t cout) {
  if (!bias.has_value()) return;
  check_like("bias", *bias, like);
  TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == cout, "bias: expected shape [", cout,
                    "], got ", bias->sizes());
}

// The forward's epilogue clamp (a fused activation): out_min <= out_max,
// neither NaN; -inf / inf leave that side unclamped.
inline OutputClamp output_clamp(double out_min, double out_max) {
  TORCH_CHECK_VALUE(!std::isnan(out_min) && !std::isnan(out_max) && out_min <= out_max,
                    "out_min, out_max: expected out_min <= out_max, neither NaN, got ", out_min,
                    ", ", out_max);
  return {out_min, out_max};
}

// An optional residual the forward adds before its clamp (a fused residual
// add): the output's shape, x's dtype and device; NCHW contiguous, as the
// kernels read it. Undefined when absent.
inline at::Tensor checked_residual(const c10::optional<at::Tensor>& residual,
                                   const at::Tensor& x, const ConvGeometry& geo) {
  if (!residual.has_value()) return at::Tensor();
  check_like("residual", *residual, x);
  TORCH_CHECK_VALUE(residual->dim() == 4 && residual->size(0) == geo.batch &&
                        residual->size(1) == geo.cout && residual->size(2) == geo.out_h &&
                        residual->size(3) == geo.out_w,
                    "residual: expected the output's shape [", geo.batch, ", ", geo.cout, ", ",
                    geo.out_h, ", ", geo.out_w, "], got ", residual->sizes());
  return residual->contiguous();
}

// A forward's epilogue (residual add, then clamp) and who runs it: the CPU
// kernel where it can (1xN takes both; stripe and pattern take the clamp
// only, so with a residual they run unclamped), else passes of their own
// after it (the CUDA kernels take neither yet).
struct Epilogue {
  at::Tensor residual;  // undefined: none
  OutputClamp clamp;
  bool in_kernel;

  // The clamp the kernel applies.
  OutputClamp kernel_clamp() const { return in_kernel ? clamp : OutputClamp{}; }
  // The residual the kernel adds (null: none, or not the kernel's to add).
  template <typename T>
  const T* kernel_residual() const {
    return in_kernel && residual.defined() ? residual.data_ptr<T>() : nullptr;
  }
  // What the kernel did not run, on its output.
  void finish(at::Tensor& out) const {
    if (in_kernel) return;
    if (residual.defined()) out.add_(residual);
    if (clamp.active()) out.clamp_(clamp.lo, clamp.hi);
  }
};

// The epilogue of a forward of x, its arguments checked and named; the CPU
// kernel runs it when it adds residuals or there is none to add.
inline Epilogue epilogue(const at::Tensor& x, const ConvGeometry& geo, double out_min,
                         double out_max, const c10::optional<at::Tensor>& residual,
                         bool kernel_adds_residual) {
  Epilogue e{checked_residual(residual, x, geo), output_clamp(out_min, out_max), false};
  e.in_kernel = x.is_cpu() && (kernel_adds_residual || !e.residual.defined());
  return e;
}

// The geometry of one conv with every integer bounded. cin and cout must be
// multiples of groups; the output must be non-empty.
inline ConvGeometry make_geometry(int64_t batch, int64_t cin, int64_t in_h, int64_t in_w,
                                  int64_t cout, int64_t kh, int64_t kw,
                                  const std::vector<int64_t>& stride,
                                  const std::vector<int64_t>& padding,
                                  const std::vector<int64_t>& dilation, int64_t groups) {
  check_pair("stride", stride);
  check_pair("padding", padding);
  check_pair("dilation", dilation);
  ConvGeometry geo{};
  geo.batch = batch;
  geo.groups = bounded_int32("groups", groups, 1);
  geo.cin = bounded_int32("in_channels", cin, 1);
  geo.cout = bounded_int32("out_channels", cout, 1);
  TORCH_CHECK_VALUE(cin % groups == 0, "groups: ", groups, " does not divide in_channels=", cin);
  TORCH_CHECK_VALUE(cout % groups == 0, "groups: ", groups, " does not divide out_channels=",
                    cout);
  geo.in_h = bounded_int32("input height", in_h, 1);
  geo.in_w = bounded_int32("input width", in_w, 1);
  geo.kh = bounded_int32("kernel height", kh, 1);
  geo.kw = bounded_int32("kernel width", kw, 1);
  geo.stride_h = bounded_int32("stride[0]", stride[0], 1);
  geo.stride_w = bounded_int32("stride[1]", stride[1], 1);
  geo.pad_h = bounded_int32("padding[0]", padding[0], 0);
  geo.pad_w = bounded_int32("padding[1]", padding[1], 0);
  geo.dil_h = bounded_int32("dilation[0]", dilation[0], 1);
  geo.dil_w = bounded_int32("dilation[1]", dilation[1], 1);
  // Every term is < 2^31, so these int64 expressions cannot overflow.
  geo.out_h = (geo.in_h + 2 * int64_t{geo.pad_h} - int64_t{geo.dil_h} * (geo.kh - 1) - 1) /
                  geo.stride_h + 1;
  geo.out_w = (geo.in_w + 2 * int64_t{geo.pad_w} - int64_t{geo.dil_w} * (geo.kw - 1) - 1) /
                  geo.stride_w + 1;
  TORCH_CHECK_VALUE(geo.out_h > 0 && geo.out_w > 0, "input: spatial size (", in_h, ", ", in_w,
                    ") is too small for the kernel (", kh, ", ", kw, ") with this padding "
                    "and dilation: the output would be empty");
  return geo;
}

// `out` in `x`'s layout: channels_last when x is (and is not also plain
// contiguous), as PyTorch's conv decides (channels_last_like in
// sparsekernels/ops/sparse_conv.py).
inline at::Tensor like_input(const at::Tensor& out, const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast))
    return out.contiguous(at::MemoryFormat::ChannelsLast);
  return out;
}

inline Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

// An int32 index tensor's entries, readable on the host: CPU tensors in place,
// CUDA tensors through a copy (one sync).
struct HostInts {
  at::Tensor host;
  const int32_t* data;
  int64_t size;
  explicit HostInts(const at::Tensor& t)
      : host(t.cpu()), data(host.data_ptr<int32_t>()), size(host.numel()) {}
  int32_t operator[](int64_t i) const { return data[i]; }
};

#ifdef SK_WITH_CUDA
inline cuda::DType cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "unsupported dtype for the CUDA kernels: ", t);
  }
}

// The launchers report cudaGetLastError after their launches, which would
// also return an error some earlier, unrelated call left pending: that one
// is taken (and named as such) before the launch, so a failure is the pass's.
inline void check_no_pending_error(const char* name) {
  const cudaError_t earlier = cudaGetLastError();
  TORCH_CHECK(earlier == cudaSuccess, "a CUDA error from an earlier call was pending when ",
              name, " started: ", cudaGetErrorString(earlier));
}

inline void check_launch(const char* name, cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "sparsekernels CUDA kernel ", name, " failed: ",
              cudaGetErrorString(err));
}

// A pass's CUDA launcher: a callable (cuda::DType, cudaStream_t) -> cudaError_t.
// Without CUDA it is dropped unparsed, as it names launchers that do not exist.
#define SK_CUDA_LAUNCHER(...) __VA_ARGS__
#else
#define SK_CUDA_LAUNCHER(...) nullptr
#endif

template <typename T>
struct ScalarTag {
  using type = T;
};

// Runs one pass on the device of `like`. CUDA tensors go to `cuda_launch`
// (given with SK_CUDA_LAUNCHER) on the device's current stream, or fail in a
// CPU-only build; CPU tensors to cpu(ScalarTag<T>{}), T being float or double
// as `like` is. Other dtypes get AT_DISPATCH_FLOATING_TYPES's error naming
// `name` (that macro itself needs `name` to be a constant expression).
template <typename CpuFn, typename CudaFn>
void dispatch_device(const char* name, const at::Tensor& like, CpuFn&& cpu,
                     [[maybe_unused]] CudaFn&& cuda_launch) {
  if (like.is_cuda()) {
#ifdef SK_WITH_CUDA
    const c10::cuda::CUDAGuard guard(like.device());
    check_no_pending_error(name);
    check_launch(name,
                 cuda_launch(cuda_dtype(like.scalar_type()), c10::cuda::getCurrentCUDAStream()));
    return;
#else
    TORCH_CHECK(false, "sparsekernels was built without CUDA");
#endif
  }
  switch (like.scalar_type()) {
    case at::kFloat: return cpu(ScalarTag<float>{});
    case at::kDouble: return cpu(ScalarTag<double>{});
    default:
      TORCH_CHECK_NOT_IMPLEMENTED(false, '"', name, "\" not implemented for '",
                                  c10::toString(like.scalar_type()), "'");
  }
}

}  // namespace glue
}  // namespace sparsekernels
