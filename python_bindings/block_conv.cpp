// Tensor glue for the 1xN block-sparse conv: checks, geometry, dtype and
// device dispatch, then a call into the torch-free kernels in csrc/.
// User-facing validation (with argument names) happens in Python before this
// point; the TORCH_CHECKs here are the last line of defence, never the UI.
#include <torch/extension.h>

#include <vector>

#include "cpu/block_conv_cpu.h"
#include "python_bindings/block_conv.h"
#ifdef SK_WITH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "cuda/block_conv_cuda.h"
#endif

namespace sparsekernels {
namespace {

Strides4 strides_of(const at::Tensor& t) {
  return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)};
}

ConvGeometry make_geometry(int64_t batch, int64_t cin, int64_t in_h, int64_t in_w,
                           int64_t cout, int64_t kh, int64_t kw,
                           const std::vector<int64_t>& stride,
                           const std::vector<int64_t>& padding,
                           const std::vector<int64_t>& dilation, int64_t groups) {
  TORCH_CHECK(stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
              "stride, padding and dilation must have 2 entries");
  ConvGeometry g{};
  g.batch = batch;
  g.cin = cin;
  g.in_h = in_h;
  g.in_w = in_w;
  g.cout = cout;
  g.kh = static_cast<int32_t>(kh);
  g.kw = static_cast<int32_t>(kw);
  g.stride_h = static_cast<int32_t>(stride[0]);
  g.stride_w = static_cast<int32_t>(stride[1]);
  g.pad_h = static_cast<int32_t>(padding[0]);
  g.pad_w = static_cast<int32_t>(padding[1]);
  g.dil_h = static_cast<int32_t>(dilation[0]);
  g.dil_w = static_cast<int32_t>(dilation[1]);
  g.groups = static_cast<int32_t>(groups);
  g.out_h = (in_h + 2 * g.pad_h - g.dil_h * (kh - 1) - 1) / g.stride_h + 1;
  g.out_w = (in_w + 2 * g.pad_w - g.dil_w * (kw - 1) - 1) / g.stride_w + 1;
  TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "convolution output would be empty");
  return g;
}

Block1xN make_blocks(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                     const at::Tensor* col_ptr, const at::Tensor* block_idx,
                     const at::Tensor* block_row, int64_t n,
                     int64_t rows_per_group) {
  for (const at::Tensor* t : {&row_ptr, &col_idx, col_ptr, block_idx, block_row}) {
    if (t == nullptr) continue;
    TORCH_CHECK(t->scalar_type() == at::kInt && t->is_contiguous(),
                "index tensors must be contiguous int32");
  }
  Block1xN b{};
  b.row_ptr = row_ptr.data_ptr<int32_t>();
  b.col_idx = col_idx.data_ptr<int32_t>();
  b.nnzb = col_idx.numel();
  b.n = static_cast<int32_t>(n);
  b.rows_per_group = rows_per_group;
  b.col_ptr = col_ptr ? col_ptr->data_ptr<int32_t>() : nullptr;
  b.block_idx = block_idx ? block_idx->data_ptr<int32_t>() : nullptr;
  b.block_row = block_row ? block_row->data_ptr<int32_t>() : nullptr;
  return b;
}

void check_same_device(const at::Tensor& a, const at::Tensor& b) {
  TORCH_CHECK(a.device() == b.device(), "all tensors must be on one device");
}

#ifdef SK_WITH_CUDA
cuda::DType cuda_dtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return cuda::DType::kFloat32;
    case at::kDouble: return cuda::DType::kFloat64;
    case at::kHalf: return cuda::DType::kFloat16;
    case at::kBFloat16: return cuda::DType::kBFloat16;
    default: TORCH_CHECK(false, "unsupported dtype for the CUDA kernels: ", t);
  }
}

void check_launch(cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "sparsekernels CUDA kernel failed: ",
              cudaGetErrorString(err));
}
#endif

}  // namespace

at::Tensor block_conv_forward(const at::Tensor& x, const at::Tensor& values,
                              const at::Tensor& row_ptr, const at::Tensor& col_idx,
                              const c10::optional<at::Tensor>& bias, int64_t n,
                              int64_t rows_per_group, int64_t cout,
                              std::vector<int64_t> stride, std::vector<int64_t> padding,
                              std::vector<int64_t> dilation, int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && values.dim() == 4, "expected 4-D input and values");
  TORCH_CHECK(x.scalar_type() == values.scalar_type(), "input/values dtype mismatch");
  check_same_device(x, values);
  const auto geo = make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), cout,
                                 values.size(1), values.size(2), stride, padding,
                                 dilation, groups);
  const auto blocks = make_blocks(row_ptr, col_idx, nullptr, nullptr, nullptr, n,
                                  rows_per_group);
  auto vals = values.contiguous();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty({geo.batch, cout, geo.out_h, geo.out_w}, x.options());
  if (x.is_cuda()) {
#ifdef SK_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    check_launch(cuda::block_conv_forward(
        cuda_dtype(x.scalar_type()), geo, blocks, vals.data_ptr(), x.data_ptr(),
        strides_of(x), b.defined() ? b.data_ptr() : nullptr, out.data_ptr(),
        c10::cuda::getCurrentCUDAStream()));
    return out;
#else
    TORCH_CHECK(false, "sparsekernels was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "block_conv_forward", [&] {
    cpu::block_conv_forward<scalar_t>(
        geo, blocks, vals.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), strides_of(x),
        b.defined() ? b.data_ptr<scalar_t>() : nullptr, out.data_ptr<scalar_t>(),
        at::get_num_threads());
  });
  return out;
}

at::Tensor block_conv_grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                                 const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                 const at::Tensor& col_ptr, const at::Tensor& block_idx,
                                 const at::Tensor& block_row, int64_t n,
                                 int64_t rows_per_group, int64_t cin, int64_t in_h,
                                 int64_t in_w, std::vector<int64_t> stride,
                                 std::vector<int64_t> padding,
                                 std::vector<int64_t> dilation, int64_t groups) {
  TORCH_CHECK(grad_out.dim() == 4 && values.dim() == 4, "expected 4-D grad_out and values");
  TORCH_CHECK(grad_out.scalar_type() == values.scalar_type(), "grad_out/values dtype mismatch");
  check_same_device(grad_out, values);
  const auto geo = make_geometry(grad_out.size(0), cin, in_h, in_w, grad_out.size(1),
                                 values.size(1), values.size(2), stride, padding,
                                 dilation, groups);
  TORCH_CHECK(geo.out_h == grad_out.size(2) && geo.out_w == grad_out.size(3),
              "grad_out spatial size does not match the convolution");
  const auto blocks = make_blocks(row_ptr, col_idx, &col_ptr, &block_idx, &block_row, n,
                                  rows_per_group);
  auto vals = values.contiguous();
  auto gin = at::empty({geo.batch, cin, in_h, in_w}, grad_out.options());
  if (grad_out.is_cuda()) {
#ifdef SK_WITH_CUDA
    const c10::cuda::CUDAGuard guard(grad_out.device());
    check_launch(cuda::block_conv_grad_input(
        cuda_dtype(grad_out.scalar_type()), geo, blocks, vals.data_ptr(),
        grad_out.data_ptr(), strides_of(grad_out), gin.data_ptr(),
        c10::cuda::getCurrentCUDAStream()));
    return gin;
#else
    TORCH_CHECK(false, "sparsekernels was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(grad_out.scalar_type(), "block_conv_grad_input", [&] {
    cpu::block_conv_grad_input<scalar_t>(geo, blocks, vals.data_ptr<scalar_t>(),
                                         grad_out.data_ptr<scalar_t>(),
                                         strides_of(grad_out), gin.data_ptr<scalar_t>(),
                                         at::get_num_threads());
  });
  return gin;
}

at::Tensor block_conv_grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                                  const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                  int64_t n, int64_t rows_per_group, int64_t kh,
                                  int64_t kw, std::vector<int64_t> stride,
                                  std::vector<int64_t> padding,
                                  std::vector<int64_t> dilation, int64_t groups) {
  TORCH_CHECK(x.dim() == 4 && grad_out.dim() == 4, "expected 4-D input and grad_out");
  TORCH_CHECK(x.scalar_type() == grad_out.scalar_type(), "input/grad_out dtype mismatch");
  check_same_device(x, grad_out);
  const auto geo = make_geometry(x.size(0), x.size(1), x.size(2), x.size(3),
                                 grad_out.size(1), kh, kw, stride, padding, dilation,
                                 groups);
  TORCH_CHECK(geo.out_h == grad_out.size(2) && geo.out_w == grad_out.size(3),
              "grad_out spatial size does not match the convolution");
  const auto blocks = make_blocks(row_ptr, col_idx, nullptr, nullptr, nullptr, n,
                                  rows_per_group);
  auto gv = at::empty({blocks.nnzb, kh, kw, n}, x.options());
  if (x.is_cuda()) {
#ifdef SK_WITH_CUDA
    const c10::cuda::CUDAGuard guard(x.device());
    check_launch(cuda::block_conv_grad_weight(
        cuda_dtype(x.scalar_type()), geo, blocks, x.data_ptr(), strides_of(x),
        grad_out.data_ptr(), strides_of(grad_out), gv.data_ptr(),
        c10::cuda::getCurrentCUDAStream()));
    return gv;
#else
    TORCH_CHECK(false, "sparsekernels was built without CUDA");
#endif
  }
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "block_conv_grad_weight", [&] {
    cpu::block_conv_grad_weight<scalar_t>(geo, blocks, x.data_ptr<scalar_t>(),
                                          strides_of(x), grad_out.data_ptr<scalar_t>(),
                                          strides_of(grad_out), gv.data_ptr<scalar_t>(),
                                          at::get_num_threads());
  });
  return gv;
}

}  // namespace sparsekernels
