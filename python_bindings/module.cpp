// The compiled module sparsekernels._C. The custom ops' kernels register
// with the dispatcher as the module loads (sparse_conv_ops.h; their schemas
// and fake kernels are Python's, sparsekernels/ops/sparse_conv.py); the
// functions here are what the eager module path and the tests call, never
// model code.
// Each sparsity kind adds its functions through register_<slug>, defined in
// python_bindings/<slug>.cpp; so do the window ops (depthwise conv, max
// pool) the sparse networks run beside them (register_window).
#include <torch/extension.h>

#include "bound_forward.h"
#include "cpu/common/isa.h"
#include "device_topology_cache.h"

namespace sparsekernels {
void register_block1xn(pybind11::module& m);
void register_stripe(pybind11::module& m);
void register_pattern(pybind11::module& m);
void register_window(pybind11::module& m);
void register_sparse_conv_ops(pybind11::module& m);
}  // namespace sparsekernels

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "sparsekernels compiled kernels (CPU, and CUDA when built with it)";
#ifdef SK_WITH_CUDA
  m.attr("with_cuda") = true;
  m.attr("cuda_version") = SK_CUDA_VERSION;
#else
  m.attr("with_cuda") = false;
  m.attr("cuda_version") = pybind11::none();
#endif
  m.def("cpu_simd_path", &sparsekernels::cpu::simd_path,
        "SIMD path the CPU kernels use on this machine");
  // The GPU topology cache's logic on any tensors, with a check that refuses
  // negative entries, for tests/test_device_topology_cache.py (no GPU there):
  // (tensors the kernels would read, whether the check ran).
  m.def("_device_topology_cache_probe",
        [](const std::vector<at::Tensor>& tensors, const std::vector<int64_t>& key) {
          static sparsekernels::glue::DeviceTopologyCache cache;
          bool ran = false;
          auto read = cache.checked(tensors, key, [&](const std::vector<at::Tensor>& copies) {
            ran = true;
            for (const auto& t : copies)
              TORCH_CHECK_VALUE(t.numel() == 0 || t.min().item<int64_t>() >= 0,
                                "probe: negative entry");
          });
          return std::make_tuple(read, ran);
        });
  sparsekernels::glue::register_bound_forward(m);
  sparsekernels::register_block1xn(m);
  sparsekernels::register_stripe(m);
  sparsekernels::register_pattern(m);
  sparsekernels::register_window(m);
  sparsekernels::register_sparse_conv_ops(m);
}
