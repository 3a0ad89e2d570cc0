// The loss ops of the default ONNX domain (opset 13): NegativeLogLikelihoodLoss and
// SoftmaxCrossEntropyLoss, as plain loops.
//
// Shapes: scores/input X [N, C, d1..dk] (k >= 0, f32), target T [N, d1..dk] (int32 or int64),
// optional weight W [C]. Per sample s = (n, d): c = T[s];
//   loss[s] = -X[n, c, d] * w(c),  w(c) = W[c] (1 without W),  loss[s] = 0 and w = 0 when c equals
//   the `ignore_index` attribute.
// reduction "none": loss [N, d1..dk]; "sum": the sum (a scalar); "mean" (default): the sum
// divided by the sum of w over the samples (NaN when every sample is ignored, as the ONNX
// reference computes). A class outside [0, C) that is not ignore_index fails the run with the
// sample's index. SoftmaxCrossEntropyLoss applies the above to LogSoftmax(X, axis 1) and may
// also output that log-probability tensor (its second output, X's shape).
#include <cmath>
#include <limits>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Reduction { kNone, kSum, kMean };

// What both ops share: the geometry, the reduction and the ignored class.
struct LossGeometry {
  int64_t n = 0, c = 0, d = 1;  // batch, classes, spatial elements per sample row
  Reduction reduction = Reduction::kMean;
  bool has_ignore = false;
  int64_t ignore_index = 0;
  bool has_weight = false;
  bool target_i64 = true;
};

// Checks inputs and attributes and sets output 0 (the loss).
Result<LossGeometry> loss_setup(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64, DType::kI32}));
  const Shape& x = ctx.in_shape(0);
  const Shape& t = ctx.in_shape(1);
  if (x.size() < 2)
    return ctx.error("input {} needs at least 2 dimensions [N, C, ...]", shape_str(x));
  Shape want_t = {x[0]};
  want_t.insert(want_t.end(), x.begin() + 2, x.end());
  if (t != want_t)
    return ctx.error("target {} must be [N, d1..dk] = {} for input {}", shape_str(t),
                     shape_str(want_t), shape_str(x));
  LossGeometry g;
  g.n = x[0];
  g.c = x[1];
  for (size_t i = 2; i < x.size(); ++i) g.d *= x[i];
  g.target_i64 = ctx.in_dtype(1) == DType::kI64;
  if (ctx.has_input(2)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(2, {DType::kF32}));
    if (ctx.in_shape(2) != Shape{g.c})
      return ctx.error("weight {} must be [C] = [{}]", shape_str(ctx.in_shape(2)), g.c);
    g.has_weight = true;
  }
  const std::string red = ctx.attr_string("reduction", "mean");
  if (red == "none")
    g.reduction = Reduction::kNone;
  else if (red == "sum")
    g.reduction = Reduction::kSum;
  else if (red == "mean")
    g.reduction = Reduction::kMean;
  else
    return ctx.error("reduction '{}' is not one of none, sum, mean", red);
  g.has_ignore = ctx.has_attr("ignore_index");
  g.ignore_index = ctx.attr_int("ignore_index", 0);
  ctx.set_output(0, DType::kF32, g.reduction == Reduction::kNone ? want_t : Shape{});
  return g;
}

// The loss of log-probabilities `lp` ([N, C, D] f32) against the targets into `out`.
Status nll(const LossGeometry& g, const float* lp, const void* target, const float* weight,
           float* out, const std::string& node) {
  double total = 0, weights = 0;
  for (int64_t n = 0; n < g.n; ++n)
    for (int64_t d = 0; d < g.d; ++d) {
      const int64_t s = n * g.d + d;
      const int64_t cls = g.target_i64 ? static_cast<const int64_t*>(target)[s]
                                       : static_cast<const int32_t*>(target)[s];
      float loss = 0.f, w = 0.f;
      if (!(g.has_ignore && cls == g.ignore_index)) {
        if (cls < 0 || cls >= g.c)
          return Status::Invalid(
              "node '{}': target {} at sample {} is not a class in [0, {}) nor the ignore_index",
              node, cls, s, g.c);
        w = weight ? weight[cls] : 1.f;
        loss = -lp[(n * g.c + cls) * g.d + d] * w;
      }
      if (g.reduction == Reduction::kNone) out[s] = loss;
      total += loss;
      weights += w;
    }
  if (g.reduction == Reduction::kSum) out[0] = static_cast<float>(total);
  if (g.reduction == Reduction::kMean)
    out[0] = weights == 0 ? std::numeric_limits<float>::quiet_NaN()
                          : static_cast<float>(total / weights);
  return Status::OK();
}

Result<KernelPtr> build_nll(BuildContext& ctx) {
  LossGeometry g;
  DLSYS_ASSIGN_OR_RETURN(g, loss_setup(ctx));
  std::string node = ctx.node_name();
  return make_kernel([g, node](const Tensor* const* in, Tensor* const* out) {
    return nll(g, in[0]->data_as<float>(), in[1]->data(),
               g.has_weight ? in[2]->data_as<float>() : nullptr, out[0]->data_as<float>(), node);
  });
}

Result<KernelPtr> build_sce(BuildContext& ctx) {
  LossGeometry g;
  DLSYS_ASSIGN_OR_RETURN(g, loss_setup(ctx));
  const bool log_prob_out = ctx.num_outputs() > 1;
  if (log_prob_out) ctx.set_output(1, DType::kF32, ctx.in_shape(0));
  // Without the second output the log-probabilities go to a buffer made here, once.
  auto scratch =
      std::make_shared<std::vector<float>>(log_prob_out ? 0 : static_cast<size_t>(g.n * g.c * g.d));
  std::string node = ctx.node_name();
  return make_kernel([g, node, scratch, log_prob_out](const Tensor* const* in, Tensor* const* out) {
    const float* x = in[0]->data_as<float>();
    float* lp = log_prob_out ? out[1]->data_as<float>() : scratch->data();
    // LogSoftmax along C for every (n, d).
    for (int64_t n = 0; n < g.n; ++n)
      for (int64_t d = 0; d < g.d; ++d) {
        const float* xs = x + n * g.c * g.d + d;
        float* ls = lp + n * g.c * g.d + d;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < g.c; ++c) mx = std::max(mx, xs[c * g.d]);
        double sum = 0;
        for (int64_t c = 0; c < g.c; ++c) sum += std::exp(static_cast<double>(xs[c * g.d] - mx));
        const float lse = mx + static_cast<float>(std::log(sum));
        for (int64_t c = 0; c < g.c; ++c) ls[c * g.d] = xs[c * g.d] - lse;
      }
    return nll(g, lp, in[1]->data(), g.has_weight ? in[2]->data_as<float>() : nullptr,
               out[0]->data_as<float>(), node);
  });
}

}  // namespace

void register_loss_ops(OpRegistry& r) {
  r.add("NegativeLogLikelihoodLoss", 2, 3, 1, 1, build_nll);
  r.add("SoftmaxCrossEntropyLoss", 2, 3, 1, 2, build_sce);
}

}  // namespace dlsys
