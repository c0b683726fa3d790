// Window ops on the CPU in NCHW, forward only: the dense depthwise conv (one
// filter per channel: groups == in == out channels) and the max pool. They
// run beside the sparse kinds' kernels in those kernels' layout, so that a
// pruned MobileNet's depthwise convs and a ResNet's stem pool need no layout
// change (PyTorch's NCHW max pool and oneDNN's NCHW depthwise conv are
// several times slower than their channels_last ones). Inference: autograd
// and other devices use PyTorch's ops (sparsekernels/nn/nchw_kernels.py).
// Raw pointers only (no torch): the pybind11 layer checks and unpacks tensors.
#pragma once
#include "sparsekernels/conv_geometry.h"

namespace sparsekernels {
namespace cpu {

// output[N, C, OH, OW] (NCHW contiguous) = clamp(depthwise conv(input, W) + bias),
// geo.cin == geo.cout == geo.groups; weight [C, Kh, Kw] contiguous; input
// read through in_strides; bias may be null. T is float or double; every
// output element is written.
template <typename T>
void depthwise_forward(const ConvGeometry& geo, const T* weight, const T* input,
                       Strides4 in_strides, const T* bias, const OutputClamp& clamp, T* output,
                       int num_threads);

// output[N, C, OH, OW] (NCHW contiguous) = the max over each Kh x Kw window
// (geo's stride, padding, dilation; padding never enters the max, NaN
// propagates, as torch.max_pool2d), geo.cin == geo.cout == geo.groups.
template <typename T>
void max_pool_forward(const ConvGeometry& geo, const T* input, Strides4 in_strides, T* output,
                      int num_threads);

}  // namespace cpu
}  // namespace sparsekernels
