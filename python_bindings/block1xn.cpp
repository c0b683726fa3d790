// Bindings of the 1xN block-sparse conv: the full topology check, then each
// pass's tensor checks and a call into the torch-free kernels in csrc/.
// These functions are reachable from Python (sparsekernels._C and the custom
// ops), so each one checks everything a kernel relies on before calling it:
// bounded integers, consistent shapes, and the whole topology (indices in
// range, CSR order, the transposed view equal to the one the CSR implies).
#include <torch/extension.h>

#include <vector>

#include "bound_forward.h"
#include "conv_glue.h"
#include "sparse_conv_ops.h"
#include "device_topology_cache.h"
#include "csr_checks.h"
#include "cpu/block1xn/block1xn_cpu.h"
#include "sparsekernels/block1xn.h"
#ifdef SK_WITH_CUDA
#include "cuda/block1xn/block1xn_cuda.h"
#endif

namespace sparsekernels {
namespace {

using glue::HostInts;

// Field names of the 1xN topology in the messages of csr_checks.h (they match
// sparsekernels/formats/block1xn.py).
constexpr glue::CsrNames kNames{"row_ptr", "col_idx", "nnzb", "input channels per group",
                                "col_ptr", "block", "col_ptr/block_idx/block_row",
                                "row_ptr/col_idx", "Block1xN.topology()"};

// The kernels' view of a 1xN topology, after checking it completely against
// the geometry: O(nnzb + rows + in_channels) integer work, negligible next to
// the conv itself (on a GPU, done once per topology: device_topology_cache.h).
// `col_ptr` etc. are null for passes that do not read them. `blocks` points
// into `tensors`, which must outlive the kernels' launch.
struct CheckedBlocks {
  Block1xN blocks;
  std::vector<at::Tensor> tensors;
};

CheckedBlocks checked_blocks(const ConvGeometry& geo, const at::Device& device,
                             const at::Tensor& row_ptr, const at::Tensor& col_idx,
                             const at::Tensor* col_ptr, const at::Tensor* block_idx,
                             const at::Tensor* block_row, int64_t n, int64_t rows_per_group) {
  const int64_t cout_g = geo.cout_per_group(), cin_g = geo.cin_per_group();
  const int32_t n32 = glue::bounded_int32("n", n, 1, kMaxBlockHeight);
  const int64_t want_rows = (cout_g + n32 - 1) / n32;
  TORCH_CHECK_VALUE(rows_per_group == want_rows, "rows_per_group: expected ceil(",
                    cout_g, " / n=", n32, ") = ", want_rows, ", got ", rows_per_group);
  const int64_t rows = geo.groups * want_rows;
  TORCH_CHECK_VALUE(col_idx.dim() == 1, "col_idx: expected a 1-D tensor, got shape ",
                    col_idx.sizes());
  const int64_t nnzb = col_idx.numel();
  TORCH_CHECK_VALUE(nnzb <= rows * cin_g, "col_idx: ", nnzb, " blocks, more than the ",
                    rows * cin_g, " a weight of this shape has");
  glue::check_index_tensor("row_ptr", row_ptr, rows + 1, device);
  glue::check_index_tensor("col_idx", col_idx, nnzb, device);
  std::vector<at::Tensor> given{row_ptr, col_idx};
  if (col_ptr != nullptr) given.insert(given.end(), {*col_ptr, *block_idx, *block_row});
  auto read = glue::checked_index_tensors(
      device, given, {glue::kBlock1xNTopology, geo.cout, geo.cin, geo.groups, n32},
      [&](const std::vector<at::Tensor>& t) {
        const HostInts rp(t[0]), ci(t[1]);
        // The CSR first: a wrong nnzb is named where it is (row_ptr's end),
        // not as a length mismatch of the transposed view.
        glue::check_csr(rp, ci, cin_g, kNames);
        if (t.size() < 5) return;
        glue::check_index_tensor("col_ptr", t[2], geo.cin + 1, device);
        glue::check_index_tensor("block_idx", t[3], nnzb, device);
        glue::check_index_tensor("block_row", t[4], nnzb, device);
        glue::check_transpose(  // column of a block: its absolute input channel
            rp, ci, HostInts(t[2]), HostInts(t[3]), HostInts(t[4]),
            [&](int64_t row, int64_t col) { return (row / want_rows) * cin_g + col; }, kNames);
      });
  Block1xN b{};
  b.row_ptr = read[0].data_ptr<int32_t>();
  b.col_idx = read[1].data_ptr<int32_t>();
  b.nnzb = nnzb;
  b.n = n32;
  b.rows_per_group = want_rows;
  b.col_ptr = read.size() == 5 ? read[2].data_ptr<int32_t>() : nullptr;
  b.block_idx = read.size() == 5 ? read[3].data_ptr<int32_t>() : nullptr;
  b.block_row = read.size() == 5 ? read[4].data_ptr<int32_t>() : nullptr;
  return {b, std::move(read)};
}

// values[nnzb, Kh, Kw, N] of the conv's dtype and device.
void check_values(const at::Tensor& values, const at::Tensor& like, int64_t nnzb,
                  const ConvGeometry& geo, int64_t n) {
  glue::check_like("values", values, like);
  TORCH_CHECK_VALUE(values.dim() == 4 && values.size(0) == nnzb && values.size(1) == geo.kh &&
                        values.size(2) == geo.kw && values.size(3) == n,
                    "values: expected shape [nnzb=", nnzb, ", Kh=", geo.kh, ", Kw=", geo.kw,
                    ", N=", n, "], got ", values.sizes());
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_ptr,
                   const at::Tensor& col_idx, const c10::optional<at::Tensor>& bias, int64_t n,
                   int64_t rows_per_group, int64_t cout, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation,
                   int64_t groups, double out_min, double out_max,
                   const c10::optional<at::Tensor>& residual) {
  glue::check_4d("input", x);
  glue::check_4d("values", values);
  const auto geo = glue::make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), cout,
                                       values.size(1), values.size(2), stride, padding,
                                       dilation, groups);
  const auto checked = checked_blocks(geo, x.device(), row_ptr, col_idx, nullptr, nullptr,
                                      nullptr, n, rows_per_group);
  const Block1xN& blocks = checked.blocks;
  check_values(values, x, blocks.nnzb, geo, n);
  glue::check_bias(bias, x, cout);
  const glue::Epilogue ep =
      glue::epilogue(x, geo, out_min, out_max, residual, /*kernel_adds_residual=*/true);
  auto vals = values.contiguous();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty({geo.batch, cout, geo.out_h, geo.out_w}, x.options());
  glue::dispatch_device(
      "block1xn_forward", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::block1xn_forward<T>(geo, blocks, vals.data_ptr<T>(), x.data_ptr<T>(),
                                 glue::strides_of(x), b.defined() ? b.data_ptr<T>() : nullptr,
                                 ep.kernel_clamp(), ep.kernel_residual<T>(),
                                 out.data_ptr<T>(), at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::block1xn_forward(dtype, geo, blocks, vals.data_ptr(), x.data_ptr(),
                                      glue::strides_of(x), b.defined() ? b.data_ptr() : nullptr,
                                      out.data_ptr(), stream);
      }));
  ep.finish(out);
  return out;
}

at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                      const at::Tensor& row_ptr, const at::Tensor& col_idx,
                      const at::Tensor& col_ptr, const at::Tensor& block_idx,
                      const at::Tensor& block_row, int64_t n, int64_t rows_per_group,
                      int64_t cin, int64_t in_h, int64_t in_w, std::vector<int64_t> stride,
                      std::vector<int64_t> padding, std::vector<int64_t> dilation,
                      int64_t groups) {
  glue::check_4d("grad_out", grad_out);
  glue::check_4d("values", values);
  const auto geo = glue::make_geometry(grad_out.size(0), cin, in_h, in_w, grad_out.size(1),
                                       values.size(1), values.size(2), stride, padding,
                                       dilation, groups);
  TORCH_CHECK_VALUE(geo.out_h == grad_out.size(2) && geo.out_w == grad_out.size(3),
                    "grad_out: spatial size (", grad_out.size(2), ", ", grad_out.size(3),
                    ") does not match the convolution's output (", geo.out_h, ", ", geo.out_w,
                    ")");
  const auto checked = checked_blocks(geo, grad_out.device(), row_ptr, col_idx, &col_ptr,
                                      &block_idx, &block_row, n, rows_per_group);
  const Block1xN& blocks = checked.blocks;
  check_values(values, grad_out, blocks.nnzb, geo, n);
  auto vals = values.contiguous();
  auto gin = at::empty({geo.batch, cin, in_h, in_w}, grad_out.options());
  glue::dispatch_device(
      "block1xn_grad_input", grad_out,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::block1xn_grad_input<T>(geo, blocks, vals.data_ptr<T>(), grad_out.data_ptr<T>(),
                                    glue::strides_of(grad_out), gin.data_ptr<T>(),
                                    at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::block1xn_grad_input(dtype, geo, blocks, vals.data_ptr(),
                                         grad_out.data_ptr(), glue::strides_of(grad_out),
                                         gin.data_ptr(), stream);
      }));
  return gin;
}

at::Tensor grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                       const at::Tensor& row_ptr, const at::Tensor& col_idx, int64_t n,
                       int64_t rows_per_group, int64_t kh, int64_t kw,
                       std::vector<int64_t> stride, std::vector<int64_t> padding,
                       std::vector<int64_t> dilation, int64_t groups) {
  glue::check_4d("input", x);
  glue::check_activation("grad_out", grad_out, x);
  const auto geo = glue::make_geometry(x.size(0), x.size(1), x.size(2), x.size(3),
                                       grad_out.size(1), kh, kw, stride, padding, dilation,
                                       groups);
  TORCH_CHECK_VALUE(geo.batch == grad_out.size(0) && geo.out_h == grad_out.size(2) &&
                        geo.out_w == grad_out.size(3),
                    "grad_out: shape ", grad_out.sizes(), " does not match the convolution's "
                    "output [", geo.batch, ", ", geo.cout, ", ", geo.out_h, ", ", geo.out_w, "]");
  const auto checked = checked_blocks(geo, x.device(), row_ptr, col_idx, nullptr, nullptr,
                                      nullptr, n, rows_per_group);
  const Block1xN& blocks = checked.blocks;
  auto gv = at::empty({blocks.nnzb, kh, kw, n}, x.options());
  glue::dispatch_device(
      "block1xn_grad_weight", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::block1xn_grad_weight<T>(geo, blocks, x.data_ptr<T>(), glue::strides_of(x),
                                     grad_out.data_ptr<T>(), glue::strides_of(grad_out),
                                     gv.data_ptr<T>(), at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::block1xn_grad_weight(dtype, geo, blocks, x.data_ptr(),
                                          glue::strides_of(x), grad_out.data_ptr(),
                                          glue::strides_of(grad_out), gv.data_ptr(), stream);
      }));
  return gv;
}

// Raises ValueError/TypeError unless the topology is one a kernel may read for
// a conv with these channel counts (what the passes above check first).
// Returns the tensors a kernel must read (on a GPU, the checked copies).
std::vector<at::Tensor> check_topology(const at::Tensor& row_ptr, const at::Tensor& col_idx,
                    const c10::optional<at::Tensor>& col_ptr,
                    const c10::optional<at::Tensor>& block_idx,
                    const c10::optional<at::Tensor>& block_row, int64_t n,
                    int64_t rows_per_group, int64_t cout, int64_t cin, int64_t groups) {
  const bool transposed = col_ptr.has_value();
  TORCH_CHECK_VALUE(block_idx.has_value() == transposed && block_row.has_value() == transposed,
                    "col_ptr/block_idx/block_row: give all three or none");
  ConvGeometry geo{};
  geo.groups = glue::bounded_int32("groups", groups, 1);
  geo.cin = glue::bounded_int32("in_channels", cin, 1);
  geo.cout = glue::bounded_int32("out_channels", cout, 1);
  TORCH_CHECK_VALUE(cin % groups == 0, "groups: ", groups, " does not divide in_channels=", cin);
  TORCH_CHECK_VALUE(cout % groups == 0, "groups: ", groups, " does not divide out_channels=",
                    cout);
  return checked_blocks(geo, row_ptr.device(), row_ptr, col_idx,
                        transposed ? &*col_ptr : nullptr, transposed ? &*block_idx : nullptr,
                        transposed ? &*block_row : nullptr, n, rows_per_group)
      .tensors;
}

// forward with all but the input and the residual bound (bound_forward.h).
glue::BoundForward forward_plan(const at::Tensor& values, const at::Tensor& row_ptr,
                                const at::Tensor& col_idx, const c10::optional<at::Tensor>& bias,
                                int64_t n, int64_t rows_per_group, int64_t cout,
                                std::vector<int64_t> stride, std::vector<int64_t> padding,
                                std::vector<int64_t> dilation, int64_t groups, double out_min,
                                double out_max) {
  return glue::BoundForward([=](const at::Tensor& x, const c10::optional<at::Tensor>& residual) {
    return forward(x, values, row_ptr, col_idx, bias, n, rows_per_group, cout, stride, padding,
                   dilation, groups, out_min, out_max, residual);
  });
}

// The custom ops sparsekernels::block1xn_conv2d* (sparse_conv_ops.h): meta
// is [Cout, Cin/g, Kh, Kw, N, groups].
struct Block1xNOps {
  static constexpr const char* kSlug = "block1xn";
  static constexpr std::array<const char*, 5> kTensors{"row_ptr", "col_idx", "col_ptr",
                                                       "block_idx", "block_row"};
  static constexpr std::array<const char*, 1> kParams{"n"};

  static void check_params(const ops::OpMeta& m) {
    ops::as_int("n", m.params[0], 1, kMaxBlockHeight);
  }
  static int64_t rows_per_group(const ops::OpMeta& m) {
    return (m.cout / m.groups + m.params[0] - 1) / m.params[0];
  }
  static at::Tensor forward(const at::Tensor& x, const at::Tensor& values, at::TensorList t,
                            const ops::OpMeta& m, const c10::optional<at::Tensor>& bias,
                            const ops::OpConv& c, const c10::optional<at::Tensor>& residual,
                            double out_min, double out_max) {
    return sparsekernels::forward(x, values, t[0], t[1], bias, m.params[0], rows_per_group(m),
                                  m.cout, c.stride, c.padding, c.dilation, c.groups, out_min,
                                  out_max, residual);
  }
  static at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                               at::TensorList t, const ops::OpMeta& m, int64_t in_h,
                               int64_t in_w, const ops::OpConv& c) {
    return sparsekernels::grad_input(grad_out, values, t[0], t[1], t[2], t[3], t[4],
                                     m.params[0], rows_per_group(m), m.cin(), in_h, in_w,
                                     c.stride, c.padding, c.dilation, c.groups);
  }
  static at::Tensor grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                                at::TensorList t, const ops::OpMeta& m, const ops::OpConv& c) {
    return sparsekernels::grad_weight(x, grad_out, t[0], t[1], m.params[0], rows_per_group(m),
                                      m.kh, m.kw, c.stride, c.padding, c.dilation, c.groups);
  }
};

}  // namespace

SK_REGISTER_SPARSE_CONV_OPS(Block1xNOps)

void register_block1xn(pybind11::module& m) {
  m.def("block1xn_forward", &forward);
  m.def("block1xn_forward_plan", &forward_plan);
  m.def("block1xn_grad_input", &grad_input);
  m.def("block1xn_grad_weight", &grad_weight);
  m.def("block1xn_check_topology", &check_topology);
#ifdef SK_WITH_CUDA
  m.def("block1xn_cuda_hopper_forward", &cuda::block1xn_hopper_forward_available,
        "whether the bf16/fp16 CUDA forward runs the sm_90a wgmma kernel on this device");
#endif
  m.attr("max_block_height") = kMaxBlockHeight;
}

}  // namespace sparsekernels
