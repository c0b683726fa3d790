// Binding of the dense depthwise conv's CPU forward (csrc/cpu/depthwise):
// every operand checked and named before the kernel sees it.
#include <torch/extension.h>

#include <vector>

#include "conv_glue.h"
#include "cpu/depthwise/depthwise_cpu.h"

namespace sparsekernels {
namespace {

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                   const c10::optional<at::Tensor>& bias, std::vector<int64_t> stride,
                   std::vector<int64_t> padding, std::vector<int64_t> dilation, double out_min,
                   double out_max) {
  glue::check_4d("input", x);
  glue::check_activation("weight", weight, x);
  TORCH_CHECK_VALUE(x.is_cpu(), "input: expected a CPU tensor (the depthwise kernel runs on "
                    "the CPU), got one on ", x.device());
  TORCH_CHECK_TYPE(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
                   "input: expected dtype float32 or float64, got ", x.scalar_type());
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

}  // namespace

void register_depthwise(pybind11::module& m) {
  m.def("depthwise_forward", &forward,
        "dense depthwise conv2d forward on the CPU, NCHW, with bias and an output clamp");
}

}  // namespace sparsekernels
