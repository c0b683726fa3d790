// A kind's forward with every argument but the input and the residual bound
// once per weight: what InferencePlan (sparsekernels/ops/sparse_conv.py)
// calls on each eager inference call. Passing a forward's fifteen arguments
// from Python cost ~2.3 us a call, a fifth of a small layer's C++ call
// (ResNet-56 at batch 1, scripts/call_cost.py). The bound call runs the
// kind's full forward binding, so every operand is still checked on every
// call; a call that binding refuses (the input's dtype, channels or size, a
// residual that would broadcast) returns None, and the caller takes its
// general path, which names the error or handles the case.
#pragma once
#include <torch/extension.h>

#include <functional>
#include <utility>

namespace sparsekernels {
namespace glue {

class BoundForward {
 public:
  using Run = std::function<at::Tensor(const at::Tensor& x,
                                       const c10::optional<at::Tensor>& residual)>;
  explicit BoundForward(Run run) : run_(std::move(run)) {}

  // The output in the input's layout (channels_last in, channels_last out, as
  // PyTorch's conv: the rule of channels_last_like in ops/sparse_conv.py), or
  // None where the forward binding refuses the call.
  c10::optional<at::Tensor> operator()(const at::Tensor& x,
                                       const c10::optional<at::Tensor>& residual) const {
    at::Tensor out;
    try {
      out = run_(x, residual);
    } catch (const c10::Error&) {
      return c10::nullopt;
    }
    if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast))
      out = out.contiguous(at::MemoryFormat::ChannelsLast);
    return out;
  }

 private:
  Run run_;
};

inline void register_bound_forward(pybind11::module& m) {
  pybind11::class_<BoundForward>(m, "BoundForward")
      .def("__call__", &BoundForward::operator(), pybind11::arg("x"),
           pybind11::arg("residual") = pybind11::none());
}

}  // namespace glue
}  // namespace sparsekernels
