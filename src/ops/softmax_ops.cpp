// Softmax and LogSoftmax (opset 13 semantics: along one axis) on oneDNN's softmax_v2; Hardmax.
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

// Shared by Softmax, LogSoftmax and Hardmax: f32 input, one `axis` (default -1), output of the
// input's shape. Returns the normalized axis.
Result<int64_t> axis_op_setup(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  int64_t axis = normalize_axis(ctx.attr_int("axis", -1), static_cast<int64_t>(x.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for input {}", ctx.attr_int("axis", -1),
                     shape_str(x));
  ctx.set_output(0, DType::kF32, x);
  return axis;
}

Result<KernelPtr> build_softmax(BuildContext& ctx, bool log) {
  int64_t axis;
  DLSYS_ASSIGN_OR_RETURN(axis, axis_op_setup(ctx));
  const Shape& x = ctx.in_shape(0);
  if (shape_numel(x) == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  auto md = plain_md(x, DType::kF32);
  auto call = std::make_shared<DnnlCall>();
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto d = dnnl::softmax_v2_forward::desc(
        dnnl::prop_kind::forward_inference,
        log ? dnnl::algorithm::softmax_log : dnnl::algorithm::softmax_accurate, md, md,
        static_cast<int>(axis));
    call->prim = dnnl::softmax_v2_forward(
        dnnl::softmax_v2_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
    call->add(DNNL_ARG_SRC, md);
    call->add(DNNL_ARG_DST, md);
  }));
  return make_kernel([call](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->exec();
    return Status::OK();
  });
}

// Hardmax: 1 at the first maximum along the axis, 0 elsewhere.
Result<KernelPtr> build_hardmax(BuildContext& ctx) {
  int64_t axis;
  DLSYS_ASSIGN_OR_RETURN(axis, axis_op_setup(ctx));
  const Shape& x = ctx.in_shape(0);
  AxisSplit sp = split_at_axis(x, axis);
  int64_t outer = sp.outer, n = sp.n, inner = sp.inner;
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* X = in[0]->data_as<float>();
    float* Y = o[0]->data_as<float>();
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t b = 0; b < inner; ++b) {
        int64_t best = 0;
        for (int64_t k = 0; k < n; ++k) {
          int64_t idx = (a * n + k) * inner + b;
          if (X[idx] > X[(a * n + best) * inner + b]) best = k;
          Y[idx] = 0.f;
        }
        if (n > 0) Y[(a * n + best) * inner + b] = 1.f;
      }
    return Status::OK();
  });
}

}  // namespace

void register_softmax_ops(OpRegistry& r) {
  r.add("Softmax", 1, 1, 1, 1, [](BuildContext& c) { return build_softmax(c, false); });
  r.add("LogSoftmax", 1, 1, 1, 1, [](BuildContext& c) { return build_softmax(c, true); });
  r.add("Hardmax", 1, 1, 1, 1, build_hardmax);
}

}  // namespace dlsys
