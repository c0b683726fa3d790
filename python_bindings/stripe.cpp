// Bindings of the stripe-sparse conv: the full topology check, then each
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
#include "cpu/stripe/stripe_cpu.h"
#include "csr_checks.h"
#include "sparsekernels/stripe.h"
#ifdef SK_WITH_CUDA
#include "cuda/stripe/stripe_cuda.h"
#endif

namespace sparsekernels {
namespace {

using glue::HostInts;

// Field names of the stripe topology in the messages of csr_checks.h (they
// match sparsekernels/formats/stripe.py).
constexpr glue::CsrNames kNames{"row_ptr", "tap_idx", "nnz", "kernel positions Kh*Kw",
                                "tap_ptr", "stripe", "tap_ptr/stripe_idx/stripe_row",
                                "row_ptr/tap_idx", "Stripe.topology()"};

// Every pass reads the CSR and its transposed view; all five tensors are
// checked completely against the geometry (O(nnz + Cout + groups * Kh*Kw)
// integer work, negligible next to the conv itself; on a GPU, done once per
// topology: device_topology_cache.h). `stripes` points into `tensors`, which
// must outlive the kernels' launch.
struct CheckedStripes {
  Stripes stripes;
  std::vector<at::Tensor> tensors;
};

CheckedStripes checked_stripes(const ConvGeometry& geo, const at::Device& device,
                               const at::Tensor& row_ptr, const at::Tensor& tap_idx,
                               const at::Tensor& tap_ptr, const at::Tensor& stripe_idx,
                               const at::Tensor& stripe_row) {
  const int64_t taps = int64_t{geo.kh} * geo.kw;
  TORCH_CHECK_VALUE(taps * geo.groups < glue::kInt32Max, "kernel size: groups * Kh * Kw = ",
                    geo.groups, " * ", geo.kh, " * ", geo.kw,
                    " does not fit the int32 topology indices");
  TORCH_CHECK_VALUE(tap_idx.dim() == 1, "tap_idx: expected a 1-D tensor, got shape ",
                    tap_idx.sizes());
  const int64_t nnz = tap_idx.numel();
  TORCH_CHECK_VALUE(nnz <= geo.cout * taps, "tap_idx: ", nnz, " stripes, more than the ",
                    geo.cout * taps, " a weight of this shape has");
  glue::check_index_tensor("row_ptr", row_ptr, geo.cout + 1, device);
  glue::check_index_tensor("tap_idx", tap_idx, nnz, device);
  const int64_t cout_g = geo.cout_per_group();
  auto read = glue::checked_index_tensors(
      device, {row_ptr, tap_idx, tap_ptr, stripe_idx, stripe_row},
      {glue::kStripeTopology, geo.cout, geo.groups, geo.kh, geo.kw},
      [&](const std::vector<at::Tensor>& t) {
        const HostInts rp(t[0]), ti(t[1]);
        // The CSR first: a wrong nnz is named where it is (row_ptr's end),
        // not as a length mismatch of the transposed view.
        glue::check_csr(rp, ti, taps, kNames);
        glue::check_index_tensor("tap_ptr", t[2], geo.groups * taps + 1, device);
        glue::check_index_tensor("stripe_idx", t[3], nnz, device);
        glue::check_index_tensor("stripe_row", t[4], nnz, device);
        // Column of a stripe: (its group, its kernel position).
        glue::check_transpose(
            rp, ti, HostInts(t[2]), HostInts(t[3]), HostInts(t[4]),
            [&](int64_t row, int64_t tap) { return (row / cout_g) * taps + tap; }, kNames);
      });
  Stripes s{};
  s.row_ptr = read[0].data_ptr<int32_t>();
  s.tap_idx = read[1].data_ptr<int32_t>();
  s.nnz = nnz;
  s.tap_ptr = read[2].data_ptr<int32_t>();
  s.stripe_idx = read[3].data_ptr<int32_t>();
  s.stripe_row = read[4].data_ptr<int32_t>();
  return {s, std::move(read)};
}

// values[nnz, Cin/g] of the conv's dtype and device.
void check_values(const at::Tensor& values, const at::Tensor& like, int64_t nnz,
                  const ConvGeometry& geo) {
  glue::check_like("values", values, like);
  TORCH_CHECK_VALUE(values.dim() == 2 && values.size(0) == nnz &&
                        values.size(1) == geo.cin_per_group(),
                    "values: expected shape [nnz=", nnz, ", Cin/g=", geo.cin_per_group(),
                    "], got ", values.sizes());
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& values, const at::Tensor& row_ptr,
                   const at::Tensor& tap_idx, const at::Tensor& tap_ptr,
                   const at::Tensor& stripe_idx, const at::Tensor& stripe_row,
                   const c10::optional<at::Tensor>& bias, int64_t cout, int64_t kh, int64_t kw,
                   std::vector<int64_t> stride, std::vector<int64_t> padding,
                   std::vector<int64_t> dilation, int64_t groups, double out_min, double out_max,
                   const c10::optional<at::Tensor>& residual) {
  glue::check_4d("input", x);
  const auto geo = glue::make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), cout, kh, kw,
                                       stride, padding, dilation, groups);
  const auto checked = checked_stripes(geo, x.device(), row_ptr, tap_idx, tap_ptr, stripe_idx,
                                      stripe_row);
  const Stripes& st = checked.stripes;
  check_values(values, x, st.nnz, geo);
  glue::check_bias(bias, x, cout);
  const glue::Epilogue ep =
      glue::epilogue(x, geo, out_min, out_max, residual, /*kernel_adds_residual=*/false);
  auto vals = values.contiguous();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty({geo.batch, cout, geo.out_h, geo.out_w}, x.options());
  glue::dispatch_device(
      "stripe_forward", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::stripe_forward<T>(geo, st, vals.data_ptr<T>(), x.data_ptr<T>(),
                               glue::strides_of(x), b.defined() ? b.data_ptr<T>() : nullptr,
                               ep.kernel_clamp(), out.data_ptr<T>(),
                               at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::stripe_forward(dtype, geo, st, vals.data_ptr(), x.data_ptr(),
                                    glue::strides_of(x), b.defined() ? b.data_ptr() : nullptr,
                                    out.data_ptr(), stream);
      }));
  ep.finish(out);
  return out;
}

at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                      const at::Tensor& row_ptr, const at::Tensor& tap_idx,
                      const at::Tensor& tap_ptr, const at::Tensor& stripe_idx,
                      const at::Tensor& stripe_row, int64_t cin, int64_t in_h, int64_t in_w,
                      int64_t kh, int64_t kw, std::vector<int64_t> stride,
                      std::vector<int64_t> padding, std::vector<int64_t> dilation,
                      int64_t groups) {
  glue::check_4d("grad_out", grad_out);
  const auto geo = glue::make_geometry(grad_out.size(0), cin, in_h, in_w, grad_out.size(1), kh,
                                       kw, stride, padding, dilation, groups);
  TORCH_CHECK_VALUE(geo.out_h == grad_out.size(2) && geo.out_w == grad_out.size(3),
                    "grad_out: spatial size (", grad_out.size(2), ", ", grad_out.size(3),
                    ") does not match the convolution's output (", geo.out_h, ", ", geo.out_w,
                    ")");
  const auto checked = checked_stripes(geo, grad_out.device(), row_ptr, tap_idx, tap_ptr,
                                      stripe_idx, stripe_row);
  const Stripes& st = checked.stripes;
  check_values(values, grad_out, st.nnz, geo);
  auto vals = values.contiguous();
  auto gin = at::empty({geo.batch, cin, in_h, in_w}, grad_out.options());
  glue::dispatch_device(
      "stripe_grad_input", grad_out,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::stripe_grad_input<T>(geo, st, vals.data_ptr<T>(), grad_out.data_ptr<T>(),
                                  glue::strides_of(grad_out), gin.data_ptr<T>(),
                                  at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::stripe_grad_input(dtype, geo, st, vals.data_ptr(), grad_out.data_ptr(),
                                       glue::strides_of(grad_out), gin.data_ptr(), stream);
      }));
  return gin;
}

at::Tensor grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                       const at::Tensor& row_ptr, const at::Tensor& tap_idx,
                       const at::Tensor& tap_ptr, const at::Tensor& stripe_idx,
                       const at::Tensor& stripe_row, int64_t kh, int64_t kw,
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
  const auto checked = checked_stripes(geo, x.device(), row_ptr, tap_idx, tap_ptr, stripe_idx,
                                      stripe_row);
  const Stripes& st = checked.stripes;
  auto gv = at::empty({st.nnz, geo.cin_per_group()}, x.options());
  glue::dispatch_device(
      "stripe_grad_weight", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::stripe_grad_weight<T>(geo, st, x.data_ptr<T>(), glue::strides_of(x),
                                   grad_out.data_ptr<T>(), glue::strides_of(grad_out),
                                   gv.data_ptr<T>(), at::get_num_threads());
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::stripe_grad_weight(dtype, geo, st, x.data_ptr(), glue::strides_of(x),
                                        grad_out.data_ptr(), glue::strides_of(grad_out),
                                        gv.data_ptr(), stream);
      }));
  return gv;
}

// Raises ValueError/TypeError unless the topology is one a kernel may read for
// a conv with these shapes (what the passes above check first).
// Returns the tensors a kernel must read (on a GPU, the checked copies).
std::vector<at::Tensor> check_topology(const at::Tensor& row_ptr, const at::Tensor& tap_idx,
                    const at::Tensor& tap_ptr, const at::Tensor& stripe_idx,
                    const at::Tensor& stripe_row, int64_t cout, int64_t cin, int64_t kh,
                    int64_t kw, int64_t groups) {
  ConvGeometry geo{};
  geo.groups = glue::bounded_int32("groups", groups, 1);
  geo.cin = glue::bounded_int32("in_channels", cin, 1);
  geo.cout = glue::bounded_int32("out_channels", cout, 1);
  TORCH_CHECK_VALUE(cin % groups == 0, "groups: ", groups, " does not divide in_channels=", cin);
  TORCH_CHECK_VALUE(cout % groups == 0, "groups: ", groups, " does not divide out_channels=",
                    cout);
  geo.kh = glue::bounded_int32("kernel height", kh, 1);
  geo.kw = glue::bounded_int32("kernel width", kw, 1);
  return checked_stripes(geo, row_ptr.device(), row_ptr, tap_idx, tap_ptr, stripe_idx,
                         stripe_row)
      .tensors;
}

// forward with all but the input and the residual bound (bound_forward.h).
glue::BoundForward forward_plan(const at::Tensor& values, const at::Tensor& row_ptr,
                                const at::Tensor& tap_idx, const at::Tensor& tap_ptr,
                                const at::Tensor& stripe_idx, const at::Tensor& stripe_row,
                                const c10::optional<at::Tensor>& bias, int64_t cout, int64_t kh,
                                int64_t kw, std::vector<int64_t> stride,
                                std::vector<int64_t> padding, std::vector<int64_t> dilation,
                                int64_t groups, double out_min, double out_max) {
  return glue::BoundForward([=](const at::Tensor& x, const c10::optional<at::Tensor>& residual) {
    return forward(x, values, row_ptr, tap_idx, tap_ptr, stripe_idx, stripe_row, bias, cout, kh,
                   kw, stride, padding, dilation, groups, out_min, out_max, residual);
  });
}

// The custom ops sparsekernels::stripe_conv2d* (sparse_conv_ops.h): meta is
// [Cout, Cin/g, Kh, Kw, groups].
struct StripeEntries {
  static constexpr const char* kSlug = "stripe";
  static constexpr std::array<const char*, 5> kTensors{"row_ptr", "tap_idx", "tap_ptr",
                                                       "stripe_idx", "stripe_row"};
  static constexpr auto forward_entry = &forward;
  static constexpr auto grad_input_entry = &grad_input;
  static constexpr auto grad_weight_entry = &grad_weight;
};
using StripeOps = ops::TensorsInOrder<StripeEntries>;

}  // namespace

SK_REGISTER_SPARSE_CONV_OPS(StripeOps)

void register_stripe(pybind11::module& m) {
  m.def("stripe_forward", &forward);
  m.def("stripe_forward_plan", &forward_plan);
  m.def("stripe_grad_input", &grad_input);
  m.def("stripe_grad_weight", &grad_weight);
  m.def("stripe_check_topology", &check_topology);
}

}  // namespace sparsekernels
