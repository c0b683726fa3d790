// A kind's forward with every argument but the input and the residual bound
// once per weight: what InferencePlan (sparsekernels/ops/sparse_conv.py)
// calls on each eager inference call. Passing a forward's fifteen arguments
// from Python cost ~2.3 us a call, a fifth of a small layer's C++ call
// (ResNet-56 at batch 1, scripts/call_cost.py). The bound call runs the
// kind's full forward binding, so every operand is still checked on every
// call; a call that binding refuses (the input's dtype, channels or size, a
// residual that would broadcast) returns None, and the caller takes its
// general path, which names the error or handles the case.
//
// `inference` is a module's whole eager call: it also decides, in C++, what
// the module's Python did per call before (~10 us of a ResNet-56 layer's
// ~30): that the call is plain inference (no gradient to record; plain
// tensors; no dispatch or function mode, profiler or tracer that must see
// the op), and that the weight is the one bound (the same values, bias and
// topology buffers, none modified since: identities and version counters).
// The probes are those of _plain_inference (sparsekernels/ops/sparse_conv.py),
// which makes the same decision for calls without a plan: keep them alike.
#pragma once
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/jit/frontend/tracer.h>
#include <torch/csrc/profiler/orchestration/observer.h>
#include <torch/extension.h>
#include <ATen/PythonTorchFunctionTLS.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>

#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "conv_glue.h"

namespace sparsekernels {
namespace glue {

// Hidden, as pybind11's own types are: it holds Python objects.
class __attribute__((visibility("hidden"))) BoundForward {
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
    return like_input(out, x);
  }

  // Ties `inference` to a module's weight: `values`, `bias` and the buffers
  // `names` (the topology tensors `run` was bound to), as they are now.
  void hold(const at::Tensor& values, const c10::optional<at::Tensor>& bias,
            const std::vector<std::string>& names, const std::vector<at::Tensor>& buffers) {
    TORCH_CHECK_VALUE(names.size() == buffers.size(), "hold: ", names.size(), " names for ",
                      buffers.size(), " buffers");
    std::vector<Held> held{{values, {}, 0}, {bias.value_or(at::Tensor()), {}, 0}};
    for (size_t i = 0; i < names.size(); ++i)
      held.push_back({buffers[i], pybind11::str(names[i]), 0});
    for (auto& h : held) {
      // An inference tensor has no version counter to watch: no fast path.
      if (h.tensor.defined() && h.tensor.is_inference()) return held_.clear();
      h.version = version(h.tensor);
    }
    held_ = std::move(held);
  }

  // forward(x, residual) if the call is plain inference on the held weight:
  // `values`, `bias` (None: none) and `buffers` (the module's buffer dict)
  // are what the module has now. None otherwise: the caller's general path.
  pybind11::object inference(pybind11::handle x, pybind11::handle residual,
                             pybind11::handle values, pybind11::handle bias,
                             pybind11::handle buffers) const {
    const pybind11::object none = pybind11::none();
    if (held_.empty() || !plain(x) || !plain(values) || !(bias.is_none() || plain(bias)) ||
        !(residual.is_none() || plain(residual)) || !PyDict_Check(buffers.ptr()))
      return none;
    if (!same(held_[0].tensor, values) ||
        (bias.is_none() ? held_[1].tensor.defined() : !same(held_[1].tensor, bias)))
      return none;
    for (size_t i = 2; i < held_.size(); ++i) {
      PyObject* now = PyDict_GetItemWithError(buffers.ptr(), held_[i].name.ptr());
      if (now == nullptr) {
        PyErr_Clear();
        return none;
      }
      if (!THPVariable_CheckExact(now) || !same(held_[i].tensor, now)) return none;
    }
    for (const auto& h : held_)
      if (version(h.tensor) != h.version) return none;
    const at::Tensor& xt = THPVariable_Unpack(x.ptr());
    c10::optional<at::Tensor> res;
    if (!residual.is_none()) res = THPVariable_Unpack(residual.ptr());
    if (at::GradMode::is_enabled() &&
        (xt.requires_grad() || held_[0].tensor.requires_grad() ||
         (held_[1].tensor.defined() && held_[1].tensor.requires_grad()) ||
         (res && res->requires_grad())))
      return none;
    if (c10::impl::TorchDispatchModeTLS::stack_len() > 0 ||
        at::impl::torch_function_mode_enabled() || torch::profiler::impl::profilerEnabled() ||
        torch::jit::tracer::isTracing())
      return none;
    auto out = (*this)(xt, res);
    if (!out) return none;
    return pybind11::cast(*std::move(out));
  }

 private:
  struct Held {
    at::Tensor tensor;      // undefined: an absent bias
    pybind11::object name;  // a buffer's name in the module's dict
    uint32_t version;       // the tensor's version counter when held
  };

  // A torch.Tensor or nn.Parameter, not a subclass (which may mean to see
  // the op through __torch_function__).
  static bool plain(pybind11::handle h) { return THPVariable_CheckExact(h.ptr()); }
  static bool same(const at::Tensor& held, pybind11::handle h) {
    return THPVariable_Unpack(h.ptr()).unsafeGetTensorImpl() == held.unsafeGetTensorImpl();
  }
  static uint32_t version(const at::Tensor& t) {
    return t.defined() ? t.unsafeGetTensorImpl()->version_counter().current_version() : 0;
  }

  Run run_;
  std::vector<Held> held_;  // values, bias, the topology buffers; empty: not held
};

inline void register_bound_forward(pybind11::module& m) {
  pybind11::class_<BoundForward>(m, "BoundForward")
      .def("__call__", &BoundForward::operator(), pybind11::arg("x"),
           pybind11::arg("residual") = pybind11::none())
      .def("hold", &BoundForward::hold, pybind11::arg("values"), pybind11::arg("bias"),
           pybind11::arg("names"), pybind11::arg("buffers"))
      .def("inference", &BoundForward::inference, pybind11::arg("x"), pybind11::arg("residual"),
           pybind11::arg("values"), pybind11::arg("bias"), pybind11::arg("buffers"));
}

}  // namespace glue
}  // namespace sparsekernels
