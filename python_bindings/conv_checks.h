// Checks every tensor-level entry point runs before a kernel sees its
// arguments: integers bounded where they enter (no silent narrowing to the
// int32 fields of ConvGeometry), shapes consistent, index tensors of the right
// type and length. Errors are ValueError / TypeError in Python and name the
// argument. Shared by every sparsity kind's glue.
#pragma once
#include <torch/extension.h>

#include <cstdint>
#include <limits>
#include <vector>

#include "sparsekernels/conv_geometry.h"

namespace sparsekernels {
namespace checks {

constexpr int64_t kInt32Max = std::numeric_limits<int32_t>::max();

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

// An int32, contiguous, 1-D index tensor of `numel` entries on `device`.
inline void check_index_tensor(const char* name, const at::Tensor& t, int64_t numel,
                               const at::Device& device) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kInt, name, ": expected dtype int32, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.numel() == numel, name, ": expected shape [", numel,
                    "], got ", t.sizes());
  TORCH_CHECK_VALUE(t.is_contiguous(), name, ": expected a contiguous tensor");
  TORCH_CHECK_VALUE(t.device() == device, name, ": expected a tensor on ", device, ", got ",
                    t.device());
}

inline void check_activation(const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK_VALUE(t.dim() == 4, name, ": expected a 4-D tensor, got shape ", t.sizes());
  TORCH_CHECK_TYPE(t.scalar_type() == like.scalar_type(), name, ": expected dtype ",
                   like.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == like.device(), name, ": expected a tensor on ",
                    like.device(), ", got ", t.device());
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
  ConvGeometry g{};
  g.batch = batch;
  g.groups = bounded_int32("groups", groups, 1);
  g.cin = bounded_int32("in_channels", cin, 1);
  g.cout = bounded_int32("out_channels", cout, 1);
  TORCH_CHECK_VALUE(cin % groups == 0, "groups: ", groups, " does not divide in_channels=", cin);
  TORCH_CHECK_VALUE(cout % groups == 0, "groups: ", groups, " does not divide out_channels=",
                    cout);
  g.in_h = bounded_int32("input height", in_h, 1);
  g.in_w = bounded_int32("input width", in_w, 1);
  g.kh = bounded_int32("kernel height", kh, 1);
  g.kw = bounded_int32("kernel width", kw, 1);
  g.stride_h = bounded_int32("stride[0]", stride[0], 1);
  g.stride_w = bounded_int32("stride[1]", stride[1], 1);
  g.pad_h = bounded_int32("padding[0]", padding[0], 0);
  g.pad_w = bounded_int32("padding[1]", padding[1], 0);
  g.dil_h = bounded_int32("dilation[0]", dilation[0], 1);
  g.dil_w = bounded_int32("dilation[1]", dilation[1], 1);
  // Every term is < 2^31, so these int64 expressions cannot overflow.
  g.out_h = (g.in_h + 2 * int64_t{g.pad_h} - int64_t{g.dil_h} * (g.kh - 1) - 1) / g.stride_h + 1;
  g.out_w = (g.in_w + 2 * int64_t{g.pad_w} - int64_t{g.dil_w} * (g.kw - 1) - 1) / g.stride_w + 1;
  TORCH_CHECK_VALUE(g.out_h > 0 && g.out_w > 0, "input: spatial size (", in_h, ", ", in_w,
                    ") is too small for the kernel (", kh, ", ", kw, ") with this padding "
                    "and dilation: the output would be empty");
  return g;
}

}  // namespace checks
}  // namespace sparsekernels
