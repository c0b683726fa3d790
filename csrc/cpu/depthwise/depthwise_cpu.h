// Dense depthwise conv2d (one filter per channel: groups == in == out
// channels) on the CPU, forward only, NCHW: the layout the sparse kinds'
// kernels run in, so that a pruned MobileNet's depthwise convs need no
// layout change between its sparse 1x1 convs. Inference: autograd and other
// devices use F.conv2d (sparsekernels/nn/depthwise.py).
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

}  // namespace cpu
}  // namespace sparsekernels
