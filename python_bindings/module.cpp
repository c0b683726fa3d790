// The compiled module sparsekernels._C. The tensor functions are wrapped in
// torch.library custom ops by sparsekernels/ops/ (so autograd, fake tensors
// and torch.compile see them); nothing here should be called from model code.
#include <torch/extension.h>

#include "cpu/common/isa.h"
#include "block_conv.h"
#include "sparsekernels/block1xn.h"

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
  m.def("block_conv_forward", &sparsekernels::block_conv_forward);
  m.def("block_conv_grad_input", &sparsekernels::block_conv_grad_input);
  m.def("block_conv_grad_weight", &sparsekernels::block_conv_grad_weight);
  m.def("block_conv_check_topology", &sparsekernels::block_conv_check_topology);
  m.attr("max_block_height") = sparsekernels::kMaxBlockHeight;
}
