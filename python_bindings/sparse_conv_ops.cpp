// The Python op bodies the C++ op kernels hand non-native backends to
// (sparse_conv_ops.h), set by sparsekernels/ops/sparse_conv.py at import.
#include "sparse_conv_ops.h"

#include <unordered_map>

namespace sparsekernels {
namespace ops {
namespace {

// Never destroyed: the objects are Python's, and Python may be gone when
// static destructors run.
std::unordered_map<std::string, pybind11::object>& bodies() {
  static auto* map = new std::unordered_map<std::string, pybind11::object>();
  return *map;
}

}  // namespace

void set_python_body(const std::string& op, pybind11::object body) {
  bodies()[op] = std::move(body);
}

pybind11::object python_body(const std::string& op) {
  const auto it = bodies().find(op);
  TORCH_CHECK(it != bodies().end(), "sparsekernels::", op,
              ": no Python body for the non-compiled backends (import sparsekernels first)");
  return it->second;
}

}  // namespace ops

void register_sparse_conv_ops(pybind11::module& m) {
  m.def("_set_op_python_body", &ops::set_python_body,
        "the Python body the C++ kernel of op `name` runs for non-native backends");
}

}  // namespace sparsekernels
