// MaxUnpool: the partial inverse of MaxPool. Each value of X goes to the flat position of the
// output that its index (MaxPool's Indices output: offsets into the whole N x C x spatial
// tensor) names; every other output element is zero. A plain loop (oneDNN has no unpooling).
#include <cstring>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

Result<KernelPtr> build_max_unpool(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 3) return ctx.error("X {} must be [N, C, D1, ...] (rank >= 3)", shape_str(x));
  if (ctx.in_shape(1) != x)
    return ctx.error("I {} must have X's shape {}", shape_str(ctx.in_shape(1)), shape_str(x));
  const size_t sd = x.size() - 2;
  const std::vector<int64_t> kernel = ctx.attr_ints("kernel_shape");
  if (kernel.size() != sd)
    return ctx.error("kernel_shape has {} values; X {} has {} spatial dims", kernel.size(),
                     shape_str(x), sd);
  std::vector<int64_t> strides = ctx.attr_ints("strides"), pads = ctx.attr_ints("pads");
  if (strides.empty()) strides.assign(sd, 1);
  if (pads.empty()) pads.assign(2 * sd, 0);
  if (strides.size() != sd || pads.size() != 2 * sd)
    return ctx.error("strides ({}) and pads ({}) must have {} and {} values", strides.size(),
                     pads.size(), sd, 2 * sd);
  Shape y = x;
  for (size_t d = 0; d < sd; ++d)
    y[d + 2] = (x[d + 2] - 1) * strides[d] + kernel[d] - pads[d] - pads[d + sd];
  if (ctx.has_input(2)) {
    std::vector<int64_t> os;
    DLSYS_ASSIGN_OR_RETURN(os, ctx.const_ints(2, "output_shape"));
    if (os.size() != x.size() || os[0] != x[0] || os[1] != x[1])
      return ctx.error("output_shape {} must be [{}, {}, ...] of rank {}", shape_str(os), x[0],
                       x[1], x.size());
    for (size_t d = 0; d < sd; ++d)
      if (os[d + 2] < y[d + 2])
        return ctx.error("output_shape {} is smaller than the unpooled shape {}", shape_str(os),
                         shape_str(y));
    y = os;
  }
  for (int64_t v : y)
    if (v < 0) return ctx.error("the output shape {} is negative", shape_str(y));
  ctx.set_output(0, DType::kF32, y);
  const int64_t total = shape_numel(y);
  std::string node = ctx.node_name();
  return make_kernel([total, node](const Tensor* const* in, Tensor* const* out) {
    float* Y = out[0]->data_as<float>();
    std::memset(Y, 0, static_cast<size_t>(total) * sizeof(float));
    const float* X = in[0]->data_as<float>();
    const int64_t* I = in[1]->data_as<int64_t>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) {
      if (I[i] < 0 || I[i] >= total)
        return Status::Invalid("node '{}': index {} (at {}) is outside the output's {} elements",
                               node, I[i], i, total);
      Y[I[i]] = X[i];
    }
    return Status::OK();
  });
}

}  // namespace

void register_unpool_ops(OpRegistry& r) {
  r.add("MaxUnpool", 2, 3, 1, 1, build_max_unpool);
}

}  // namespace dlsys
