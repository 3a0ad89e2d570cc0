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

// The activation layout (src, dst, diff_dst, diff_src) the forward convolution and its
// gradients all use in a training plan, so that each converts X and dY once
// (BuildContext::convert_input shares the conversion): nChw16c for a 2-D ungrouped convolution
// whose channels are multiples of 16, else `any` (each primitive picks; nothing shared).
dnnl::memory::format_tag training_activation_tag(const BuildContext& ctx, const Shape& x,
                                                 const ConvGeometry& geo);

}  // namespace dlsys
