// The geometry of a convolution (Conv's attributes resolved against concrete shapes), shared by
// the forward Conv kernels and their gradients (conv_grad_ops.cpp).
#pragma once

#include <dnnl.hpp>

#include "ops/kernel.h"

namespace dlsys {

struct ConvGeometry {
  int64_t group = 1;
  Shape out;                        // [N, M, spatial...]
  dnnl::memory::dims weights;       // oneDNN weight dims: [M, C, k...] or [g, M/g, C/g, k...]
  dnnl::memory::dims strides;       // per spatial dim
  dnnl::memory::dims dilations;     // oneDNN convention: ONNX dilation - 1
  dnnl::memory::dims pad_l, pad_r;  // auto_pad resolved
};

// Resolves the Conv attributes of `ctx` (group, kernel_shape, strides, dilations, pads,
// auto_pad) for input X of shape `x` and weights W of shape `w` (same rank, 3 to 5). Errors name
// the node and the attribute that does not fit.
Status conv_geometry(const BuildContext& ctx, const Shape& x, const Shape& w, ConvGeometry* geo);

}  // namespace dlsys
