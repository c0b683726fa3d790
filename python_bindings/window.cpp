// Bindings of the CPU window ops (csrc/cpu/window): the dense depthwise conv
// and the max pool, every operand checked and named before a kernel sees it.
#include <torch/extension.h>

#include <vector>

#include "conv_glue.h"
#include "cpu/window/window_cpu.h"

namespace sparsekernels {
namespace {

void check_input(const at::Tensor& x) {
  glue::check_4d("input", x);
  TORCH_CHECK_VALUE(x.is_cpu(), "input: expected a CPU tensor (the window kernels run on the "
                    "CPU), got one on ", x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "input: expected dtype torch.float32 or torch.float64, got ",
                   glue::dtype_name(x.scalar_type()));
}

at::Tensor depthwise_forward(const at::Tensor& x, const at::Tensor& weight,
                             const c10::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                             std::vector<int64_t> padding, std::vector<int64_t> dilation,
                             double out_min, double out_max) {
  check_input(x);
  glue::check_activation("weight", weight, x);
  const int64_t c = x.size(1);
  TORCH_CHECK_VALUE(weight.size(0) == c && weight.size(1) == 1, "weight: expected shape [", c,
                    ", 1, Kh, Kw] (one filter per input channel), got ", weight.sizes());
  const auto geo = glue::make_geometry(x.size(0), c, x.size(2), x.size(3), c, weight.size(2),
                                       weight.size(3), stride, padding, dilation, c);
  glue::check_bias(bias, x, c);
  const OutputClamp clamp = glue::output_clamp(out_min, out_max);
  auto w = weight.contiguous();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty({geo.batch, c, geo.out_h, geo.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "depthwise_forward", [&] {
    cpu::depthwise_forward<scalar_t>(geo, w.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
                                     glue::strides_of(x),
                                     b.defined() ? b.data_ptr<scalar_t>() : nullptr, clamp,
                                     out.data_ptr<scalar_t>(), at::get_num_threads());
  });
  return out;
}

at::Tensor max_pool_forward(const at::Tensor& x, std::vector<int64_t> kernel_size,
                            std::vector<int64_t> stride, std::vector<int64_t> padding,
                            std::vector<int64_t> dilation) {
  check_input(x);
  glue::check_pair("kernel_size", kernel_size);
  glue::check_pair("padding", padding);
  for (int d = 0; d < 2; ++d)  // every window then holds an input pixel
    TORCH_CHECK_VALUE(padding[d] >= 0 && 2 * padding[d] <= kernel_size[d],
                      "padding: expected at most half the kernel size ", kernel_size[d],
                      " (as torch.max_pool2d), got ", padding[d]);
  const int64_t c = x.size(1);
  const auto geo = glue::make_geometry(x.size(0), c, x.size(2), x.size(3), c, kernel_size[0],
                                       kernel_size[1], stride, padding, dilation, c);
  auto out = at::empty({geo.batch, c, geo.out_h, geo.out_w}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "max_pool_forward", [&] {
    cpu::max_pool_forward<scalar_t>(geo, x.data_ptr<scalar_t>(), glue::strides_of(x),
                                    out.data_ptr<scalar_t>(), at::get_num_threads());
  });
  return out;
}

}  // namespace

void register_window(pybind11::module& m) {
  m.def("depthwise_forward", &depthwise_forward,
        "dense depthwise conv2d forward on the CPU, NCHW, with bias and an output clamp");
  m.def("max_pool_forward", &max_pool_forward, "max_pool2d forward on the CPU, NCHW");
}

}  // namespace sparsekernels
