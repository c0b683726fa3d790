// The custom ops sparsekernels::<slug>_conv2d{,_grad_input,_grad_weight} of
// every kind as C++ kernels: their CPU and CUDA kernels and their autograd.
// Their schemas and fake kernels are defined in Python
// (sparsekernels/ops/sparse_conv.py), which also has each op's body for the
// backends that are not compiled (Triton, the reference): a kernel here
// takes the native backends itself and hands any other backend to that body
// (set_python_body). Registered through the dispatcher, a call from an
// autograd graph or a torch.compile'd one costs microseconds, where the same
// ops as torch.library.custom_op cost ~110 us a call in Python layers,
// several times a small layer's conv (scripts/call_cost.py).
//
// A kind plugs in with a traits struct (Block1xNOps in block1xn.cpp;
// TensorsInOrder below for kinds whose entry points take the topology's
// tensors in order):
//   kSlug                the ops' name prefix
//   kTensors             the topology's tensor names, in the ops' order
//   kParams              the names of the kind's integers in meta after
//                        [Cout, Cin/g, Kh, Kw]
//   check_params(meta)   bounds of those integers, as the format checks them
//   forward, grad_input, grad_weight: the kind's checked entry points, on
//                        operands of a dtype the native kernels compute in
// and SK_REGISTER_SPARSE_CONV_OPS(Traits) in its bindings file.
//
// The op-level checks here are the Python op body's (KindChecks in
// sparsekernels/ops/checks.py, topology_from_op_args in formats/base.py,
// check_conv_args in conv_args.py), with the same messages: what a caller
// sees does not depend on which backend ran. The entry points then check
// every operand again and the whole topology, as they do for any caller.
#pragma once
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/extension.h>
#include <torch/library.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "conv_glue.h"

namespace sparsekernels {
namespace ops {

// A bound of the forward's epilogue clamp that clamps nothing (-inf / inf).
constexpr double kNoClamp = std::numeric_limits<double>::infinity();

// meta = [Cout, Cin/g, Kh, Kw, *params, groups], bounded.
struct OpMeta {
  int64_t cout, cin_per_group, kh, kw, groups;
  std::vector<int64_t> params;
  int64_t cin() const { return cin_per_group * groups; }
};

// The conv arguments as the ops take them (pairs, bounded).
struct OpConv {
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;
};

// Python's as_int message: "<name>: expected an int in [lo, hi], got v".
inline int64_t as_int(const char* name, int64_t value, int64_t lo,
                      int64_t hi = glue::kInt32Max) {
  TORCH_CHECK_VALUE(value >= lo && value <= hi, name, ": expected an int in [", lo, ", ", hi,
                    "], got ", value);
  return value;
}

inline std::vector<int64_t> as_pair(const char* name, at::IntArrayRef v, int64_t lo) {
  TORCH_CHECK_VALUE(v.size() == 2, name, ": expected an int or a pair of ints, got ", v);
  return {as_int(name, v[0], lo), as_int(name, v[1], lo)};
}

inline OpConv check_conv(at::IntArrayRef stride, at::IntArrayRef padding,
                         at::IntArrayRef dilation, int64_t groups) {
  return {as_pair("stride", stride, 1), as_pair("padding", padding, 0),
          as_pair("dilation", dilation, 1), as_int("groups", groups, 1)};
}

template <size_t N>
std::string joined(const std::array<const char*, N>& names) {
  std::ostringstream s;
  for (size_t i = 0; i < N; ++i) s << (i ? ", " : "") << names[i];
  return s.str();
}

// The topology's tensors and meta, checked as topology_from_op_args does.
template <class Kind>
OpMeta check_meta(at::TensorList topology, at::IntArrayRef meta) {
  constexpr size_t tensors = Kind::kTensors.size(), params = Kind::kParams.size();
  TORCH_CHECK_VALUE(topology.size() == tensors, "topology: expected ", tensors, " tensors (",
                    joined(Kind::kTensors), "), got ", topology.size());
  TORCH_CHECK_VALUE(meta.size() == 5 + params, "meta: expected ", 5 + params,
                    " ints (cout, cin_per_group, kh, kw, ",
                    params ? joined(Kind::kParams) + ", " : std::string(), "groups), got ",
                    meta.size());
  OpMeta m{meta[0], meta[1], meta[2], meta[3], meta.back(),
           std::vector<int64_t>(meta.begin() + 4, meta.end() - 1)};
  Kind::check_params(m);
  as_int("groups", m.groups, 1);
  as_int("weight shape: out_channels", m.cout, 1);
  as_int("weight shape: in_channels/groups", m.cin_per_group, 1);
  as_int("weight shape: kernel height", m.kh, 1);
  as_int("weight shape: kernel width", m.kw, 1);
  TORCH_CHECK_VALUE(m.cout % m.groups == 0, "groups: ", m.groups,
                    " does not divide out_channels=", m.cout);
  return m;
}

inline void check_groups(const OpConv& conv, const OpMeta& m) {
  TORCH_CHECK_VALUE(conv.groups == m.groups, "groups: ", conv.groups,
                    " does not match the weight's groups=", m.groups);
}

inline void check_channels(const char* name, const at::Tensor& t, int64_t channels) {
  TORCH_CHECK_VALUE(t.size(1) == channels, name, ": expected ", channels, " channels, got ",
                    t.size(1));
}

// values of `like`'s dtype and device (its shape is the entry point's check).
inline void check_values(const at::Tensor& values, const at::Tensor& like) {
  TORCH_CHECK_VALUE(values.dim() >= 1, "values: expected a tensor, got shape ", values.sizes());
  glue::check_like("values", values, like);
}

// The output size of a conv of `in_hw`, which must not be empty.
inline std::array<int64_t, 2> output_hw(int64_t in_h, int64_t in_w, const OpMeta& m,
                                        const OpConv& c) {
  std::array<int64_t, 2> out{};
  const int64_t in[2] = {in_h, in_w}, k[2] = {m.kh, m.kw};
  for (int d = 0; d < 2; ++d)
    out[d] = (in[d] + 2 * c.padding[d] - c.dilation[d] * (k[d] - 1) - 1) / c.stride[d] + 1;
  TORCH_CHECK_VALUE(out[0] >= 1 && out[1] >= 1, "input: spatial size (", in_h, ", ", in_w,
                    ") is too small for kernel (", m.kh, ", ", m.kw, ") with padding (",
                    c.padding[0], ", ", c.padding[1], ") and dilation (", c.dilation[0], ", ",
                    c.dilation[1], ")");
  return out;
}

// Whether `backend` on `device` is a compiled kernel here; the others (and
// names that are no backend, for the message) go to the Python body.
inline bool runs_native(std::string_view backend, const at::Device& device) {
#ifdef SK_WITH_CUDA
  constexpr bool with_cuda = true;
#else
  constexpr bool with_cuda = false;
#endif
  if (device.is_cpu()) return backend == "auto" || backend == "cpu";
  if (device.is_cuda() && with_cuda) return backend == "auto" || backend == "cuda";
  return false;
}

// The dtype a native pass computes in (backends.native_dtype): half
// precision runs in float32 on the CPU, cast back after.
inline at::ScalarType work_dtype(const at::Tensor& like) {
  const auto t = like.scalar_type();
  return like.is_cuda() || t == at::kFloat || t == at::kDouble ? t : at::kFloat;
}

inline at::Tensor cast(const at::Tensor& t, at::ScalarType dtype) {
  return t.scalar_type() == dtype ? t : t.to(dtype);
}

inline c10::optional<at::Tensor> cast(const c10::optional<at::Tensor>& t,
                                      at::ScalarType dtype) {
  if (!t.has_value()) return t;
  return cast(*t, dtype);
}

// The Python op bodies that run the non-native backends, by op name
// ("block1xn_conv2d_grad_input"); set once at import.
void set_python_body(const std::string& op, pybind11::object body);
pybind11::object python_body(const std::string& op);

// The Python body of `op` on these arguments; the caller holds the GIL
// (dispatcher kernels run without it). A Python exception reaches the
// caller as itself.
template <typename... Args>
at::Tensor call_python_body(const std::string& op, const pybind11::kwargs& kwargs,
                            Args&&... args) {
  return python_body(op)(std::forward<Args>(args)..., **kwargs).template cast<at::Tensor>();
}

// A kind's three ops, and their names ("block1xn_conv2d_grad_input").
enum class Op { kForward, kGradInput, kGradWeight };

template <class Kind>
const std::string& op_name(Op op) {
  static const std::string names[3] = {std::string(Kind::kSlug) + "_conv2d",
                                       std::string(Kind::kSlug) + "_conv2d_grad_input",
                                       std::string(Kind::kSlug) + "_conv2d_grad_weight"};
  return names[static_cast<int>(op)];
}

inline pybind11::kwargs conv_kwargs(at::IntArrayRef stride, at::IntArrayRef padding,
                                    at::IntArrayRef dilation, int64_t groups,
                                    std::string_view backend) {
  pybind11::kwargs kw;
  kw["stride"] = stride.vec();
  kw["padding"] = padding.vec();
  kw["dilation"] = dilation.vec();
  kw["groups"] = groups;
  kw["backend"] = std::string(backend);
  return kw;
}

// The forward's epilogue bounds as the op takes them (None: that side
// unclamped), for the entry points: -inf / inf.
inline double lower_bound(const c10::optional<double>& out_min) {
  return out_min.value_or(-kNoClamp);
}
inline double upper_bound(const c10::optional<double>& out_max) {
  return out_max.value_or(kNoClamp);
}

inline pybind11::object py_optional(const c10::optional<double>& v) {
  return v.has_value() ? pybind11::cast(*v) : pybind11::none();
}

// sparsekernels::<slug>_conv2d: the conv, plus `residual` (the output's
// shape), then clamped to [out_min, out_max] (a fused activation). The
// entry points add and clamp in the kernel's store where the kind's kernel
// does, else in passes of their own (glue::Epilogue).
template <class Kind>
at::Tensor forward_kernel(const at::Tensor& x, const at::Tensor& values, at::TensorList topology,
                          at::IntArrayRef meta, const c10::optional<at::Tensor>& bias,
                          const c10::optional<at::Tensor>& residual, at::IntArrayRef stride,
                          at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                          std::string_view backend, c10::optional<double> out_min,
                          c10::optional<double> out_max) {
  if (!runs_native(backend, x.device())) {
    pybind11::gil_scoped_acquire gil;
    auto kw = conv_kwargs(stride, padding, dilation, groups, backend);
    kw["out_min"] = py_optional(out_min);
    kw["out_max"] = py_optional(out_max);
    return call_python_body(op_name<Kind>(Op::kForward), kw, x, values, topology.vec(),
                            meta.vec(), bias, residual);
  }
  const OpMeta m = check_meta<Kind>(topology, meta);
  const OpConv conv = check_conv(stride, padding, dilation, groups);
  check_groups(conv, m);
  glue::check_activation("input", x, x);
  check_channels("input", x, m.cin());
  check_values(values, x);
  glue::check_bias(bias, x, m.cout);
  // Before the cast to the dtype the kernels compute in: a residual of
  // another dtype is refused, not converted.
  if (residual.has_value()) glue::check_like("residual", *residual, x);
  output_hw(x.size(2), x.size(3), m, conv);
  const auto work = work_dtype(x);
  const at::Tensor out =
      Kind::forward(cast(x, work), cast(values, work), topology, m, cast(bias, work), conv,
                    cast(residual, work), lower_bound(out_min), upper_bound(out_max));
  return glue::like_input(cast(out, x.scalar_type()), x);
}

// sparsekernels::<slug>_conv2d_grad_input
template <class Kind>
at::Tensor grad_input_kernel(const at::Tensor& grad_out, const at::Tensor& values,
                             at::TensorList topology, at::IntArrayRef meta,
                             at::IntArrayRef input_hw, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                             std::string_view backend) {
  if (!runs_native(backend, grad_out.device())) {
    pybind11::gil_scoped_acquire gil;
    auto kw = conv_kwargs(stride, padding, dilation, groups, backend);
    kw["input_hw"] = input_hw.vec();
    return call_python_body(op_name<Kind>(Op::kGradInput), kw, grad_out, values, topology.vec(),
                            meta.vec());
  }
  const OpMeta m = check_meta<Kind>(topology, meta);
  const OpConv conv = check_conv(stride, padding, dilation, groups);
  check_groups(conv, m);
  glue::check_activation("grad_out", grad_out, grad_out);
  check_channels("grad_out", grad_out, m.cout);
  check_values(values, grad_out);
  TORCH_CHECK_VALUE(input_hw.size() == 2, "input_hw: expected 2 ints, got ", input_hw);
  const int64_t in_h = as_int("input_hw", input_hw[0], 1);
  const int64_t in_w = as_int("input_hw", input_hw[1], 1);
  const auto want = output_hw(in_h, in_w, m, conv);
  TORCH_CHECK_VALUE(grad_out.size(2) == want[0] && grad_out.size(3) == want[1],
                    "grad_out: spatial size (", grad_out.size(2), ", ", grad_out.size(3),
                    ") does not match the convolution's output (", want[0], ", ", want[1], ")");
  const auto work = work_dtype(grad_out);
  const at::Tensor gin =
      Kind::grad_input(cast(grad_out, work), cast(values, work), topology, m, in_h, in_w, conv);
  return cast(gin, grad_out.scalar_type()).contiguous();
}

// sparsekernels::<slug>_conv2d_grad_weight
template <class Kind>
at::Tensor grad_weight_kernel(const at::Tensor& x, const at::Tensor& grad_out,
                              at::TensorList topology, at::IntArrayRef meta,
                              at::IntArrayRef stride, at::IntArrayRef padding,
                              at::IntArrayRef dilation, int64_t groups,
                              std::string_view backend) {
  if (!runs_native(backend, x.device())) {
    pybind11::gil_scoped_acquire gil;
    return call_python_body(op_name<Kind>(Op::kGradWeight),
                            conv_kwargs(stride, padding, dilation, groups, backend), x,
                            grad_out, topology.vec(), meta.vec());
  }
  const OpMeta m = check_meta<Kind>(topology, meta);
  const OpConv conv = check_conv(stride, padding, dilation, groups);
  check_groups(conv, m);
  glue::check_activation("input", x, x);
  glue::check_activation("grad_out", grad_out, x);
  check_channels("input", x, m.cin());
  check_channels("grad_out", grad_out, m.cout);
  TORCH_CHECK_VALUE(grad_out.size(0) == x.size(0), "grad_out: batch ", grad_out.size(0),
                    " does not match the input's ", x.size(0));
  const auto want = output_hw(x.size(2), x.size(3), m, conv);
  TORCH_CHECK_VALUE(grad_out.size(2) == want[0] && grad_out.size(3) == want[1],
                    "grad_out: spatial size (", grad_out.size(2), ", ", grad_out.size(3),
                    ") does not match the convolution's output (", want[0], ", ", want[1], ")");
  const auto work = work_dtype(x);
  const at::Tensor gv = Kind::grad_weight(cast(x, work), cast(grad_out, work), topology, m, conv);
  return cast(gv, x.scalar_type()).contiguous();
}

// f(t[0], ..., t[N-1])
template <size_t N, typename F, size_t... I>
decltype(auto) with_tensors(at::TensorList t, F&& f, std::index_sequence<I...>) {
  return f(t[I]...);
}
template <size_t N, typename F>
decltype(auto) with_tensors(at::TensorList t, F&& f) {
  return with_tensors<N>(t, std::forward<F>(f), std::make_index_sequence<N>{});
}

// The traits of a kind without parameters of its own whose entry points take
// the topology's tensors in order after the operands, then its geometry (as
// sparsekernels/ops/native_calls.py calls them): stripe, pattern. `Entries`
// gives kSlug, kTensors and the entry points forward_entry,
// grad_input_entry and grad_weight_entry.
template <class Entries>
struct TensorsInOrder : Entries {
  static constexpr size_t kN = Entries::kTensors.size();
  static constexpr std::array<const char*, 0> kParams{};
  static void check_params(const OpMeta&) {}

  static at::Tensor forward(const at::Tensor& x, const at::Tensor& values, at::TensorList t,
                            const OpMeta& m, const c10::optional<at::Tensor>& bias,
                            const OpConv& c, const c10::optional<at::Tensor>& residual,
                            double out_min, double out_max) {
    return with_tensors<kN>(t, [&](const auto&... ts) {
      return Entries::forward_entry(x, values, ts..., bias, m.cout, m.kh, m.kw, c.stride,
                                    c.padding, c.dilation, c.groups, out_min, out_max,
                                    residual);
    });
  }
  static at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& values,
                               at::TensorList t, const OpMeta& m, int64_t in_h, int64_t in_w,
                               const OpConv& c) {
    return with_tensors<kN>(t, [&](const auto&... ts) {
      return Entries::grad_input_entry(grad_out, values, ts..., m.cin(), in_h, in_w, m.kh, m.kw,
                                       c.stride, c.padding, c.dilation, c.groups);
    });
  }
  static at::Tensor grad_weight(const at::Tensor& x, const at::Tensor& grad_out,
                                at::TensorList t, const OpMeta& m, const OpConv& c) {
    return with_tensors<kN>(t, [&](const auto&... ts) {
      return Entries::grad_weight_entry(x, grad_out, ts..., m.kh, m.kw, c.stride, c.padding,
                                        c.dilation, c.groups);
    });
  }
};

// The op whose kernel is `Kernel` (one of the three above), as the
// dispatcher has it: its schema comes from Python, so it is looked up on
// first use, after import defined it.
template <class Kind, auto& Kernel>
const auto& dispatcher_op(Op which) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow(("sparsekernels::" + op_name<Kind>(which)).c_str(), "")
          .template typed<std::remove_reference_t<decltype(Kernel)>>();
  return op;
}

// The forward's autograd: backward is the other two ops (so a gradient is
// only as correct as their kernels), the bias's sum over pixels, and for a
// fused epilogue the clamp's, applied first: no gradient where the output
// sits at a bound it was clamped to, read from the saved output as ReLU's
// and hardtanh's backward read theirs (so a NaN passes its gradient, as
// there). The residual's gradient is the clamped one.
template <class Kind>
struct ConvFunction : public torch::autograd::Function<ConvFunction<Kind>> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& values, at::TensorList topology,
                            at::IntArrayRef meta, const c10::optional<at::Tensor>& bias,
                            const c10::optional<at::Tensor>& residual, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            std::string_view backend, c10::optional<double> out_min,
                            c10::optional<double> out_max) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor out = dispatcher_op<Kind, forward_kernel<Kind>>(Op::kForward).call(
        x, values, topology, meta, bias, residual, stride, padding, dilation, groups, backend,
        out_min, out_max);
    std::vector<at::Tensor> saved{x, values};
    saved.insert(saved.end(), topology.begin(), topology.end());
    const bool clamped = out_min.has_value() || out_max.has_value();
    if (clamped) saved.push_back(out);
    ctx->save_for_backward(saved);
    ctx->saved_data["meta"] = meta.vec();
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
    ctx->saved_data["backend"] = std::string(backend);
    ctx->saved_data["has_bias"] = bias.has_value();
    ctx->saved_data["has_residual"] = residual.has_value();
    ctx->saved_data["clamped"] = clamped;
    ctx->saved_data["out_min"] = out_min;
    ctx->saved_data["out_max"] = out_max;
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    at::Tensor grad = grads[0];
    auto saved = ctx->get_saved_variables();
    if (ctx->saved_data["clamped"].toBool()) {
      const at::Tensor out = saved.back();
      saved.pop_back();
      const auto lo = ctx->saved_data["out_min"].toOptional<double>();
      const auto hi = ctx->saved_data["out_max"].toOptional<double>();
      at::Tensor held;  // where the clamp holds the output at a bound
      if (lo.has_value()) held = out.le(*lo);
      if (hi.has_value()) held = held.defined() ? held.logical_or_(out.ge(*hi)) : out.ge(*hi);
      grad = grad.masked_fill(held, 0);
    }
    const at::Tensor &x = saved[0], &values = saved[1];
    const std::vector<at::Tensor> topology(saved.begin() + 2, saved.end());
    const auto meta = ctx->saved_data["meta"].toIntVector();
    const auto stride = ctx->saved_data["stride"].toIntVector();
    const auto padding = ctx->saved_data["padding"].toIntVector();
    const auto dilation = ctx->saved_data["dilation"].toIntVector();
    const int64_t groups = ctx->saved_data["groups"].toInt();
    const std::string backend = ctx->saved_data["backend"].toStringRef();
    // One gradient per forward argument, a topology tensor each: x, values,
    // topology..., meta, bias, residual, stride, padding, dilation, groups,
    // backend, out_min, out_max.
    const size_t k = topology.size();
    torch::autograd::variable_list out(k + 12);
    // needs_input_grad counts only the tensor arguments: x, values,
    // topology..., bias, residual.
    if (ctx->needs_input_grad(0))
      out[0] = dispatcher_op<Kind, grad_input_kernel<Kind>>(Op::kGradInput)
                   .call(grad, values, topology, meta, {x.size(2), x.size(3)}, stride, padding,
                         dilation, groups, backend);
    if (ctx->needs_input_grad(1))
      out[1] = dispatcher_op<Kind, grad_weight_kernel<Kind>>(Op::kGradWeight)
                   .call(x, grad, topology, meta, stride, padding, dilation, groups, backend);
    if (ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(2 + k))
      out[3 + k] = grad.sum({0, 2, 3});
    if (ctx->saved_data["has_residual"].toBool() && ctx->needs_input_grad(3 + k))
      out[4 + k] = grad;
    return out;
  }
};

// The forward's Autograd kernel. With no graph to record (grad mode off, or
// no operand that requires a gradient) and no forward-mode tangent, it calls
// the kernel below autograd without building a node, as PyTorch's own
// autograd kernels do: the node and its saved state cost ~12 us a call,
// more than an empty layer's kernel.
template <class Kind>
at::Tensor forward_autograd(const at::Tensor& x, const at::Tensor& values,
                            at::TensorList topology, at::IntArrayRef meta,
                            const c10::optional<at::Tensor>& bias,
                            const c10::optional<at::Tensor>& residual, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                            std::string_view backend, c10::optional<double> out_min,
                            c10::optional<double> out_max) {
  auto grad_of = [](const c10::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() && t->requires_grad();
  };
  const bool record = at::GradMode::is_enabled() &&
                      (x.requires_grad() || values.requires_grad() || grad_of(bias) ||
                       grad_of(residual));
  using torch::autograd::isFwGradDefined;
  const bool tangent = isFwGradDefined(x) || isFwGradDefined(values) ||
                       isFwGradDefined(bias) || isFwGradDefined(residual);
  if (!record && !tangent) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return dispatcher_op<Kind, forward_kernel<Kind>>(Op::kForward).call(
        x, values, topology, meta, bias, residual, stride, padding, dilation, groups, backend,
        out_min, out_max);
  }
  return ConvFunction<Kind>::apply(x, values, topology, meta, bias, residual, stride, padding,
                                   dilation, groups, backend, out_min, out_max);
}

// The gradient ops' Autograd kernels. They have no derivative of their own:
// a call that would need one (a gradient of a gradient, create_graph=True,
// or a forward-mode tangent) is refused, where PyTorch's fallback for an op
// without an Autograd kernel would differentiate it as zero with a warning.
inline void refuse_derivative(const std::string& op,
                              std::initializer_list<const at::Tensor*> operands) {
  for (const at::Tensor* t : operands)
    TORCH_CHECK_NOT_IMPLEMENTED(
        !(at::GradMode::is_enabled() && t->requires_grad()) &&
            !torch::autograd::isFwGradDefined(*t),
        "sparsekernels::", op, ": the derivative of a gradient (double backward, "
        "create_graph=True, or forward-mode AD) is not implemented");
}

template <class Kind>
at::Tensor grad_input_autograd(const at::Tensor& grad_out, const at::Tensor& values,
                               at::TensorList topology, at::IntArrayRef meta,
                               at::IntArrayRef input_hw, at::IntArrayRef stride,
                               at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups, std::string_view backend) {
  refuse_derivative(op_name<Kind>(Op::kGradInput), {&grad_out, &values});
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return dispatcher_op<Kind, grad_input_kernel<Kind>>(Op::kGradInput)
      .call(grad_out, values, topology, meta, input_hw, stride, padding, dilation, groups,
            backend);
}

template <class Kind>
at::Tensor grad_weight_autograd(const at::Tensor& x, const at::Tensor& grad_out,
                                at::TensorList topology, at::IntArrayRef meta,
                                at::IntArrayRef stride, at::IntArrayRef padding,
                                at::IntArrayRef dilation, int64_t groups,
                                std::string_view backend) {
  refuse_derivative(op_name<Kind>(Op::kGradWeight), {&x, &grad_out});
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return dispatcher_op<Kind, grad_weight_kernel<Kind>>(Op::kGradWeight)
      .call(x, grad_out, topology, meta, stride, padding, dilation, groups, backend);
}

template <class Kind>
void register_autograd_kernels(torch::Library& m) {
  m.impl(op_name<Kind>(Op::kForward).c_str(), &forward_autograd<Kind>);
  m.impl(op_name<Kind>(Op::kGradInput).c_str(), &grad_input_autograd<Kind>);
  m.impl(op_name<Kind>(Op::kGradWeight).c_str(), &grad_weight_autograd<Kind>);
}

template <class Kind>
void register_device_kernels(torch::Library& m) {
  m.impl(op_name<Kind>(Op::kForward).c_str(), &forward_kernel<Kind>);
  m.impl(op_name<Kind>(Op::kGradInput).c_str(), &grad_input_kernel<Kind>);
  m.impl(op_name<Kind>(Op::kGradWeight).c_str(), &grad_weight_kernel<Kind>);
}

}  // namespace ops
}  // namespace sparsekernels

// A kind's op kernels: CPU and CUDA (a CPU-only build hands CUDA tensors to
// the Python bodies: Triton), and the three ops' autograd.
#define SK_REGISTER_SPARSE_CONV_OPS(Kind)                                      \
  TORCH_LIBRARY_IMPL(sparsekernels, CPU, m) {                                  \
    ::sparsekernels::ops::register_device_kernels<Kind>(m);                    \
  }                                                                            \
  TORCH_LIBRARY_IMPL(sparsekernels, CUDA, m) {                                 \
    ::sparsekernels::ops::register_device_kernels<Kind>(m);                    \
  }                                                                            \
  TORCH_LIBRARY_IMPL(sparsekernels, Autograd, m) {                             \
    ::sparsekernels::ops::register_autograd_kernels<Kind>(m);                  \
  }
