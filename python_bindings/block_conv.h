// Tensor-level entry points of the 1xN block-sparse conv (see block_conv.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace sparsekernels {

at::Tensor block_conv_forward(const at::Tensor& x, const at::Tensor& values,
                              const at::Tensor& row_ptr, const at::Tensor& col_idx,
                              const c10::optional<at::Tensor>& bias, int64_t n,
                              int64_t rows_per_group, int64_t cout,
                              std::vector<int64_t> stride, std::vector<int64_t> padding,
                              std::vector<int64_t> dilation, int64_t groups);

at::Tensor block_conv_grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                                 const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                 const at::Tensor& col_ptr, const at::Tensor& block_idx,
                                 const at::Tensor& block_row, int64_t n,
                                 int64_t rows_per_group, int64_t cin, int64_t in_h,
                                 int64_t in_w, std::vector<int64_t> stride,
                                 std::vector<int64_t> padding,
                                 std::vector<int64_t> dilation, int64_t groups);

at::Tensor block_conv_grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                                  const at::Tensor& row_ptr, const at::Tensor& col_idx,
                                  int64_t n, int64_t rows_per_group, int64_t kh,
                                  int64_t kw, std::vector<int64_t> stride,
                                  std::vector<int64_t> padding,
                                  std::vector<int64_t> dilation, int64_t groups);

// Raises ValueError/TypeError unless the topology is one a kernel may read for
// a conv with these channel counts (what the functions above check first).
void block_conv_check_topology(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                               const c10::optional<at::Tensor>& col_ptr,
                               const c10::optional<at::Tensor>& block_idx,
                               const c10::optional<at::Tensor>& block_row, int64_t n,
                               int64_t rows_per_group, int64_t cout, int64_t cin,
                               int64_t groups);

}  // namespace sparsekernels
