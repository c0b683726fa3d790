// Bindings of the pattern-sparse conv: the full topology check, then each
// pass's tensor checks and a call into the torch-free kernels in csrc/.
// These functions are reachable from Python (sparsekernels._C and the custom
// ops), so each one checks everything a kernel relies on before calling it:
// bounded integers, consistent shapes, and the whole topology (the library
// and kernel CSRs well formed, pattern ids in range, the value layout and the
// transposed view equal to the ones the CSRs imply).
#include <torch/extension.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <vector>

#include "bound_forward.h"
#include "conv_glue.h"
#include "sparse_conv_ops.h"
#include "cpu/common/bounded_lru.h"
#include "device_topology_cache.h"
#include "cpu/pattern/pattern_cpu.h"
#include "csr_checks.h"
#include "sparsekernels/pattern.h"
#ifdef SK_WITH_CUDA
#include "cuda/pattern/pattern_cuda.h"
#endif

namespace sparsekernels {
namespace {

using glue::HostInts;

// Field names in the messages of csr_checks.h (they match
// sparsekernels/formats/pattern.py).
constexpr glue::CsrNames kLibraryNames{"pattern_ptr", "pattern_taps", "nnz",
                                       "kernel positions Kh*Kw", "", "", "", "", ""};
constexpr glue::CsrNames kNames{"row_ptr", "chan_idx", "nnz", "input channels per group",
                                "col_ptr", "kernel", "col_ptr/kernel_idx/kernel_row",
                                "row_ptr/chan_idx", "Pattern.topology()"};

struct Topology {
  const at::Tensor &pattern_ptr, &pattern_taps, &row_ptr, &chan_idx, &pattern_idx, &value_ptr,
      &value_tap, &col_ptr, &kernel_idx, &kernel_row;
};

#define SK_TOPOLOGY_PARAMS                                                                  \
  const at::Tensor &pattern_ptr, const at::Tensor &pattern_taps, const at::Tensor &row_ptr, \
      const at::Tensor &chan_idx, const at::Tensor &pattern_idx,                            \
      const at::Tensor &value_ptr, const at::Tensor &value_tap, const at::Tensor &col_ptr,  \
      const at::Tensor &kernel_idx, const at::Tensor &kernel_row
#define SK_TOPOLOGY_ARGS                                                                   \
  Topology {                                                                               \
    pattern_ptr, pattern_taps, row_ptr, chan_idx, pattern_idx, value_ptr, value_tap, col_ptr, \
        kernel_idx, kernel_row                                                             \
  }

void check_1d(const char* name, const at::Tensor& t) {
  glue::check_int32(name, t);
  TORCH_CHECK_VALUE(t.dim() == 1, name, ": expected a 1-D tensor, got shape ", t.sizes());
}

// Every pass reads the library, the CSR, the value layout and the transposed
// view; all ten tensors are checked completely against the geometry
// (O(P * Kh*Kw + nnz_values + Cout + Cin) integer work, negligible next to
// the conv itself).
Patterns full_check(const ConvGeometry& geo, const at::Device& device, const Topology& t) {
  const int64_t taps = int64_t{geo.kh} * geo.kw, cin_g = geo.cin_per_group();
  const int64_t cout_g = geo.cout_per_group();
  // Every count and offset of the topology (up to Cout * Cin/g * Kh*Kw weights)
  // must fit the int32 indices.
  TORCH_CHECK_VALUE(taps < glue::kInt32Max && cin_g * taps < glue::kInt32Max &&
                        geo.cout * cin_g * taps < glue::kInt32Max,
                    "weight shape: Cout * Cin/g * Kh * Kw = ", geo.cout, " * ", cin_g, " * ",
                    geo.kh, " * ", geo.kw, " does not fit the int32 topology indices");
  // The library.
  check_1d("pattern_ptr", t.pattern_ptr);
  TORCH_CHECK_VALUE(t.pattern_ptr.numel() >= 2, "pattern_ptr: expected at least one pattern "
                    "(2 entries), got ", t.pattern_ptr.numel());
  const int64_t num_patterns = t.pattern_ptr.numel() - 1;
  glue::check_index_tensor("pattern_ptr", t.pattern_ptr, num_patterns + 1, device);
  check_1d("pattern_taps", t.pattern_taps);
  glue::check_index_tensor("pattern_taps", t.pattern_taps, t.pattern_taps.numel(), device);
  const HostInts pp(t.pattern_ptr), pt(t.pattern_taps);
  glue::check_csr(pp, pt, taps, kLibraryNames);
  for (int64_t q = 0; q < num_patterns; ++q)
    TORCH_CHECK_VALUE(pp[q + 1] > pp[q], "pattern_taps: pattern ", q,
                      " is empty (every pattern keeps at least one position)");
  // The kept kernels.
  check_1d("chan_idx", t.chan_idx);
  const int64_t nnz = t.chan_idx.numel();
  TORCH_CHECK_VALUE(nnz <= geo.cout * cin_g, "chan_idx: ", nnz, " kernels, more than the ",
                    geo.cout * cin_g, " a weight of this shape has");
  glue::check_index_tensor("row_ptr", t.row_ptr, geo.cout + 1, device);
  glue::check_index_tensor("chan_idx", t.chan_idx, nnz, device);
  const HostInts rp(t.row_ptr), ci(t.chan_idx);
  glue::check_csr(rp, ci, cin_g, kNames);
  glue::check_index_tensor("pattern_idx", t.pattern_idx, nnz, device);
  const HostInts pi(t.pattern_idx);
  for (int64_t j = 0; j < nnz; ++j)
    TORCH_CHECK_VALUE(pi[j] >= 0 && pi[j] < num_patterns, "pattern_idx: entry ", j, " = ",
                      pi[j], " is out of range [0, ", num_patterns,
                      ") (patterns in the library)");
  // The value layout the CSR and the library imply (at most Cout*Cin/g*Kh*Kw
  // values, checked above to fit int32).
  glue::check_index_tensor("value_ptr", t.value_ptr, nnz + 1, device);
  const HostInts vp(t.value_ptr);
  int64_t nnz_values = 0;
  for (int64_t j = 0; j < nnz; ++j) nnz_values += pp[pi[j] + 1] - pp[pi[j]];
  auto rebuild = "; rebuild it with Pattern.topology()";
  TORCH_CHECK_VALUE(vp[0] == 0, "value_ptr: not the value layout of pattern_idx (must start "
                    "at 0, starts at ", vp[0], rebuild, ")");
  for (int64_t j = 0; j < nnz; ++j)
    TORCH_CHECK_VALUE(int64_t{vp[j + 1]} - vp[j] == pp[pi[j] + 1] - pp[pi[j]],
                      "value_ptr: not the value layout of pattern_idx (kernel ", j, " has ",
                      int64_t{vp[j + 1]} - vp[j], " values, its pattern ", pi[j], " has ",
                      pp[pi[j] + 1] - pp[pi[j]], " positions", rebuild, ")");
  glue::check_index_tensor("value_tap", t.value_tap, nnz_values, device);
  const HostInts vt(t.value_tap);
  for (int64_t j = 0; j < nnz; ++j)
    for (int64_t v = vp[j], q = pp[pi[j]]; v < vp[j + 1]; ++v, ++q)
      TORCH_CHECK_VALUE(vt[v] == pt[q], "value_tap: entry ", v, " = ", vt[v], " is not tap ",
                        pt[q], " of kernel ", j, "'s pattern ", pi[j], rebuild);
  // The transposed view; column of a kernel: (its group, its input channel).
  glue::check_index_tensor("col_ptr", t.col_ptr, geo.cin + 1, device);
  glue::check_index_tensor("kernel_idx", t.kernel_idx, nnz, device);
  glue::check_index_tensor("kernel_row", t.kernel_row, nnz, device);
  glue::check_transpose(
      rp, ci, HostInts(t.col_ptr), HostInts(t.kernel_idx), HostInts(t.kernel_row),
      [&](int64_t row, int64_t chan) { return (row / cout_g) * cin_g + chan; }, kNames);
  Patterns p{};
  p.pattern_ptr = t.pattern_ptr.data_ptr<int32_t>();
  p.pattern_taps = t.pattern_taps.data_ptr<int32_t>();
  p.num_patterns = num_patterns;
  p.row_ptr = t.row_ptr.data_ptr<int32_t>();
  p.chan_idx = t.chan_idx.data_ptr<int32_t>();
  p.pattern_idx = t.pattern_idx.data_ptr<int32_t>();
  p.nnz = nnz;
  p.value_ptr = t.value_ptr.data_ptr<int32_t>();
  p.value_tap = t.value_tap.data_ptr<int32_t>();
  p.nnz_values = nnz_values;
  p.col_ptr = t.col_ptr.data_ptr<int32_t>();
  p.kernel_idx = t.kernel_idx.data_ptr<int32_t>();
  p.kernel_row = t.kernel_row.data_ptr<int32_t>();
  return p;
}

// Cache of validated topologies (CPU only). The full check above costs about
// as much as a small conv (~10 ms on a 512x512 3x3 layer), and a layer calls
// it with the same ten tensors every step. An entry keeps a snapshot of the
// CONTENTS of the ten tensors it validated, with the geometry the check
// depended on (Cout, Cin, Kh, Kw, groups); a call hits only when every tensor
// is int32, 1-D, contiguous, on the CPU and equal element for element
// (memcmp, ~0.1 ns/byte) to a snapshot, so what a kernel reads is exactly
// what was checked. The key is the contents, not the tensor's identity or
// version counter: writes that bypass the version counter (`.data`,
// numpy views, raw pointers) and a freed tensor's storage reused by another
// are still caught; any edited index misses and is re-checked in full.
// Each entry gets a fresh id (never reused), so the kernels may cache what
// they derive from a topology (the weight plans' offsets) under that id.
// Bounded (least recently used dropped past 1024 entries or 512 MiB of
// snapshots: a network's every pattern conv stays cached, as a forward
// calls them in turn; at 16 entries a 54-conv ResNet-56 missed on every
// call), and guarded by a mutex (calls may come from several Python/autograd
// threads).
struct CachedTopology {
  int64_t cout, cin, kh, kw, groups;
  std::vector<int64_t> sizes;     // numel of each of the ten tensors
  std::vector<int32_t> contents;  // the ten tensors, concatenated
  Patterns counts;                // num_patterns, nnz, nnz_values (pointers unused)
  uint64_t id;
};
std::mutex cache_mutex;
BoundedLru<CachedTopology> cache(1024, size_t(512) << 20);  // cost: the snapshot's bytes
uint64_t next_id = 1;

const at::Tensor* tensors_of(const Topology& t, int i) {
  const at::Tensor* all[10] = {&t.pattern_ptr, &t.pattern_taps, &t.row_ptr, &t.chan_idx,
                               &t.pattern_idx, &t.value_ptr, &t.value_tap, &t.col_ptr,
                               &t.kernel_idx, &t.kernel_row};
  return all[i];
}

bool cacheable(const at::Device& device, const Topology& t) {
  if (!device.is_cpu()) return false;
  for (int i = 0; i < 10; ++i) {
    const at::Tensor& x = *tensors_of(t, i);
    if (x.scalar_type() != at::kInt || x.dim() != 1 || !x.is_contiguous() || !x.device().is_cpu())
      return false;
  }
  return true;
}

bool same_topology(const CachedTopology& e, const ConvGeometry& geo, const Topology& t) {
  if (e.cout != geo.cout || e.cin != geo.cin || e.kh != geo.kh || e.kw != geo.kw ||
      e.groups != geo.groups)
    return false;
  for (int i = 0; i < 10; ++i)
    if (tensors_of(t, i)->numel() != e.sizes[i]) return false;
  const int32_t* c = e.contents.data();
  for (int i = 0; i < 10; ++i) {
    const at::Tensor& x = *tensors_of(t, i);
    const size_t n = static_cast<size_t>(x.numel());
    if (n && std::memcmp(c, x.data_ptr<int32_t>(), n * sizeof(int32_t)) != 0) return false;
    c += n;
  }
  return true;
}

Patterns with_pointers(Patterns p, const Topology& t) {
  p.pattern_ptr = t.pattern_ptr.data_ptr<int32_t>();
  p.pattern_taps = t.pattern_taps.data_ptr<int32_t>();
  p.row_ptr = t.row_ptr.data_ptr<int32_t>();
  p.chan_idx = t.chan_idx.data_ptr<int32_t>();
  p.pattern_idx = t.pattern_idx.data_ptr<int32_t>();
  p.value_ptr = t.value_ptr.data_ptr<int32_t>();
  p.value_tap = t.value_tap.data_ptr<int32_t>();
  p.col_ptr = t.col_ptr.data_ptr<int32_t>();
  p.kernel_idx = t.kernel_idx.data_ptr<int32_t>();
  p.kernel_row = t.kernel_row.data_ptr<int32_t>();
  return p;
}

// A GPU topology: checked once into private copies (device_topology_cache.h),
// which the kernels read; `keep` holds them past the launch.
Patterns checked_on_device(const ConvGeometry& geo, const at::Device& device, const Topology& t,
                           std::vector<at::Tensor>* keep) {
  std::vector<at::Tensor> given;
  for (int i = 0; i < 10; ++i) given.push_back(*tensors_of(t, i));
  *keep = glue::device_topologies().checked(
      given, {glue::kPatternTopology, geo.cout, geo.cin, geo.kh, geo.kw, geo.groups},
      [&](const std::vector<at::Tensor>& c) {
        full_check(geo, device, Topology{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                                         c[9]});
      });
  const auto& c = *keep;
  Patterns counts{};
  counts.num_patterns = c[0].numel() - 1;
  counts.nnz = c[3].numel();
  counts.nnz_values = c[6].numel();  // full_check matched it to the value layout
  return with_pointers(counts, Topology{c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8],
                                        c[9]});
}

// The checked topology, and its cache id (0: not cached, e.g. CUDA tensors,
// which `keep` holds: see checked_on_device).
Patterns checked_patterns(const ConvGeometry& geo, const at::Device& device, const Topology& t,
                          std::vector<at::Tensor>* keep, uint64_t* id = nullptr) {
  if (id) *id = 0;
  if (device.is_cuda()) return checked_on_device(geo, device, t, keep);
  const bool cpu = cacheable(device, t);
  if (cpu) {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (const CachedTopology* hit =
            cache.find([&](const CachedTopology& e) { return same_topology(e, geo, t); })) {
      if (id) *id = hit->id;
      return with_pointers(hit->counts, t);
    }
  }
  const Patterns p = full_check(geo, device, t);
  if (!cpu) return p;
  CachedTopology e{geo.cout, geo.cin, geo.kh, geo.kw, geo.groups, {}, {}, p, 0};
  for (int i = 0; i < 10; ++i) {
    const at::Tensor& x = *tensors_of(t, i);
    e.sizes.push_back(x.numel());
    const int32_t* d = x.data_ptr<int32_t>();
    e.contents.insert(e.contents.end(), d, d + x.numel());
  }
  std::lock_guard<std::mutex> lock(cache_mutex);
  e.id = next_id++;
  if (id) *id = e.id;
  const size_t bytes = e.contents.size() * sizeof(int32_t);
  cache.insert(std::move(e), bytes);
  return p;
}

// values[nnz values] of the conv's dtype and device.
void check_values(const at::Tensor& values, const at::Tensor& like, int64_t nnz_values) {
  glue::check_like("values", values, like);
  TORCH_CHECK_VALUE(values.dim() == 1 && values.size(0) == nnz_values,
                    "values: expected shape [nnz values=", nnz_values, "], got ",
                    values.sizes());
}

at::Tensor forward(const at::Tensor& x, const at::Tensor& values, SK_TOPOLOGY_PARAMS,
                   const c10::optional<at::Tensor>& bias, int64_t cout, int64_t kh, int64_t kw,
                   std::vector<int64_t> stride, std::vector<int64_t> padding,
                   std::vector<int64_t> dilation, int64_t groups, double out_min, double out_max,
                   const c10::optional<at::Tensor>& residual) {
  glue::check_4d("input", x);
  const auto geo = glue::make_geometry(x.size(0), x.size(1), x.size(2), x.size(3), cout, kh, kw,
                                       stride, padding, dilation, groups);
  uint64_t topo_id = 0;
  std::vector<at::Tensor> keep;  // a GPU topology's checked copies, read by the kernels
  const auto pt = checked_patterns(geo, x.device(), SK_TOPOLOGY_ARGS, &keep, &topo_id);
  check_values(values, x, pt.nnz_values);
  glue::check_bias(bias, x, cout);
  const glue::Epilogue ep =
      glue::epilogue(x, geo, out_min, out_max, residual, /*kernel_adds_residual=*/false);
  auto vals = values.contiguous();
  at::Tensor b = bias.has_value() ? bias->contiguous() : at::Tensor();
  auto out = at::empty({geo.batch, cout, geo.out_h, geo.out_w}, x.options());
  glue::dispatch_device(
      "pattern_forward", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::pattern_forward<T>(geo, pt, vals.data_ptr<T>(), x.data_ptr<T>(),
                                glue::strides_of(x), b.defined() ? b.data_ptr<T>() : nullptr,
                                ep.kernel_clamp(), out.data_ptr<T>(),
                                at::get_num_threads(), topo_id);
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::pattern_forward(dtype, geo, pt, vals.data_ptr(), x.data_ptr(),
                                     glue::strides_of(x), b.defined() ? b.data_ptr() : nullptr,
                                     out.data_ptr(), stream);
      }));
  ep.finish(out);
  return out;
}

at::Tensor grad_input(const at::Tensor& grad_out, const at::Tensor& values, SK_TOPOLOGY_PARAMS,
                      int64_t cin, int64_t in_h, int64_t in_w, int64_t kh, int64_t kw,
                      std::vector<int64_t> stride, std::vector<int64_t> padding,
                      std::vector<int64_t> dilation, int64_t groups) {
  glue::check_4d("grad_out", grad_out);
  const auto geo = glue::make_geometry(grad_out.size(0), cin, in_h, in_w, grad_out.size(1), kh,
                                       kw, stride, padding, dilation, groups);
  TORCH_CHECK_VALUE(geo.out_h == grad_out.size(2) && geo.out_w == grad_out.size(3),
                    "grad_out: spatial size (", grad_out.size(2), ", ", grad_out.size(3),
                    ") does not match the convolution's output (", geo.out_h, ", ", geo.out_w,
                    ")");
  uint64_t topo_id = 0;
  std::vector<at::Tensor> keep;  // a GPU topology's checked copies, read by the kernels
  const auto pt = checked_patterns(geo, grad_out.device(), SK_TOPOLOGY_ARGS, &keep, &topo_id);
  check_values(values, grad_out, pt.nnz_values);
  auto vals = values.contiguous();
  auto gin = at::empty({geo.batch, cin, in_h, in_w}, grad_out.options());
  glue::dispatch_device(
      "pattern_grad_input", grad_out,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::pattern_grad_input<T>(geo, pt, vals.data_ptr<T>(), grad_out.data_ptr<T>(),
                                   glue::strides_of(grad_out), gin.data_ptr<T>(),
                                   at::get_num_threads(), topo_id);
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::pattern_grad_input(dtype, geo, pt, vals.data_ptr(), grad_out.data_ptr(),
                                        glue::strides_of(grad_out), gin.data_ptr(), stream);
      }));
  return gin;
}

at::Tensor grad_weight(const at::Tensor& x, const at::Tensor& grad_out, SK_TOPOLOGY_PARAMS,
                       int64_t kh, int64_t kw, std::vector<int64_t> stride,
                       std::vector<int64_t> padding, std::vector<int64_t> dilation,
                       int64_t groups) {
  glue::check_4d("input", x);
  glue::check_activation("grad_out", grad_out, x);
  const auto geo = glue::make_geometry(x.size(0), x.size(1), x.size(2), x.size(3),
                                       grad_out.size(1), kh, kw, stride, padding, dilation,
                                       groups);
  TORCH_CHECK_VALUE(geo.batch == grad_out.size(0) && geo.out_h == grad_out.size(2) &&
                        geo.out_w == grad_out.size(3),
                    "grad_out: shape ", grad_out.sizes(), " does not match the convolution's "
                    "output [", geo.batch, ", ", geo.cout, ", ", geo.out_h, ", ", geo.out_w, "]");
  uint64_t topo_id = 0;
  std::vector<at::Tensor> keep;  // a GPU topology's checked copies, read by the kernels
  const auto pt = checked_patterns(geo, x.device(), SK_TOPOLOGY_ARGS, &keep, &topo_id);
  auto gv = at::empty({pt.nnz_values}, x.options());
  glue::dispatch_device(
      "pattern_grad_weight", x,
      [&](auto tag) {
        using T = typename decltype(tag)::type;
        cpu::pattern_grad_weight<T>(geo, pt, x.data_ptr<T>(), glue::strides_of(x),
                                    grad_out.data_ptr<T>(), glue::strides_of(grad_out),
                                    gv.data_ptr<T>(), at::get_num_threads(), topo_id);
      },
      SK_CUDA_LAUNCHER([&](cuda::DType dtype, cudaStream_t stream) {
        return cuda::pattern_grad_weight(dtype, geo, pt, x.data_ptr(), glue::strides_of(x),
                                         grad_out.data_ptr(), glue::strides_of(grad_out),
                                         gv.data_ptr(), stream);
      }));
  return gv;
}

// Raises ValueError/TypeError unless the topology is one a kernel may read for
// a conv with these shapes (what the passes above check first).
// Returns the tensors a kernel must read (on a GPU, the checked copies).
std::vector<at::Tensor> check_topology(SK_TOPOLOGY_PARAMS, int64_t cout, int64_t cin,
                                       int64_t kh, int64_t kw, int64_t groups) {
  ConvGeometry geo{};
  geo.groups = glue::bounded_int32("groups", groups, 1);
  geo.cin = glue::bounded_int32("in_channels", cin, 1);
  geo.cout = glue::bounded_int32("out_channels", cout, 1);
  TORCH_CHECK_VALUE(cin % groups == 0, "groups: ", groups, " does not divide in_channels=", cin);
  TORCH_CHECK_VALUE(cout % groups == 0, "groups: ", groups, " does not divide out_channels=",
                    cout);
  geo.kh = glue::bounded_int32("kernel height", kh, 1);
  geo.kw = glue::bounded_int32("kernel width", kw, 1);
  std::vector<at::Tensor> keep;  // stays empty off the GPU: the kernels read the given ones
  checked_patterns(geo, pattern_ptr.device(), SK_TOPOLOGY_ARGS, &keep);
  if (keep.empty())
    keep = {pattern_ptr, pattern_taps, row_ptr,    chan_idx,   pattern_idx,
            value_ptr,   value_tap,    col_ptr,    kernel_idx, kernel_row};
  return keep;
}

// forward with all but the input and the residual bound (bound_forward.h).
glue::BoundForward forward_plan(const at::Tensor& values, SK_TOPOLOGY_PARAMS,
                                const c10::optional<at::Tensor>& bias, int64_t cout, int64_t kh,
                                int64_t kw, std::vector<int64_t> stride,
                                std::vector<int64_t> padding, std::vector<int64_t> dilation,
                                int64_t groups, double out_min, double out_max) {
  return glue::BoundForward([=](const at::Tensor& x, const c10::optional<at::Tensor>& residual) {
    return forward(x, values, pattern_ptr, pattern_taps, row_ptr, chan_idx, pattern_idx,
                   value_ptr, value_tap, col_ptr, kernel_idx, kernel_row, bias, cout, kh, kw,
                   stride, padding, dilation, groups, out_min, out_max, residual);
  });
}

#undef SK_TOPOLOGY_PARAMS
#undef SK_TOPOLOGY_ARGS

// The custom ops sparsekernels::pattern_conv2d* (sparse_conv_ops.h): meta is
// [Cout, Cin/g, Kh, Kw, groups].
struct PatternEntries {
  static constexpr const char* kSlug = "pattern";
  static constexpr std::array<const char*, 10> kTensors{
      "pattern_ptr", "pattern_taps", "row_ptr", "chan_idx",   "pattern_idx",
      "value_ptr",   "value_tap",    "col_ptr", "kernel_idx", "kernel_row"};
  static constexpr auto forward_entry = &forward;
  static constexpr auto grad_input_entry = &grad_input;
  static constexpr auto grad_weight_entry = &grad_weight;
};
using PatternOps = ops::TensorsInOrder<PatternEntries>;

}  // namespace

SK_REGISTER_SPARSE_CONV_OPS(PatternOps)

void register_pattern(pybind11::module& m) {
  m.def("pattern_forward", &forward);
  m.def("pattern_forward_plan", &forward_plan);
  m.def("pattern_grad_input", &grad_input);
  m.def("pattern_grad_weight", &grad_weight);
  m.def("pattern_check_topology", &check_topology);
}

}  // namespace sparsekernels
