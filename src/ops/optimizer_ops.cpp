// The optimizer ops of the ai.onnx.preview.training domain: Adagrad, Momentum (standard and
// Nesterov) and Adam, each updating n tensors in one node (inputs R, T, then the n tensors of
// each kind; outputs the n new tensors of each kind). f32 or f64 tensors; R a scalar of the same
// kinds, T an int64 scalar (the update count). Plain loops in double, each output in its input's
// dtype. dlsys's trainer has its own optimizers (src/train); these run ONNX training graphs that
// carry their update step.
#include <array>
#include <cmath>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

constexpr int kMaxTensors = 1024;  // tensors one node may update

// Checks R (scalar f32/f64), T (scalar int64) and `groups` groups of n inputs each, every group's
// i-th tensor of one shape and a float dtype; sets the outputs (`out_groups` groups of n, each
// like X_i). Returns n.
Result<int64_t> check_update(BuildContext& ctx, int groups, int out_groups) {
  int64_t rest = static_cast<int64_t>(ctx.num_inputs()) - 2;
  if (rest <= 0 || rest % groups != 0)
    return ctx.error("needs R, T and {} groups of n tensors, got {} inputs", groups,
                     ctx.num_inputs());
  int64_t n = rest / groups;
  if (static_cast<int64_t>(ctx.num_outputs()) != out_groups * n)
    return ctx.error("updates {} tensors into {} outputs; it has {}", n, out_groups * n,
                     ctx.num_outputs());
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kF64}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64}));
  if (shape_numel(ctx.in_shape(0)) != 1 || shape_numel(ctx.in_shape(1)) != 1)
    return ctx.error("R and T must be scalars, got {} and {}", shape_str(ctx.in_shape(0)),
                     shape_str(ctx.in_shape(1)));
  for (int64_t i = 0; i < n; ++i) {
    size_t x = static_cast<size_t>(2 + i);
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(x, {DType::kF32, DType::kF64}));
    for (int g = 1; g < groups; ++g) {
      size_t j = static_cast<size_t>(2 + g * n + i);
      if (ctx.in_shape(j) != ctx.in_shape(x) || ctx.in_dtype(j) != ctx.in_dtype(x))
        return ctx.error("input {} is {} {}, but tensor {} (input {}) is {} {}", j,
                         dtype_name(ctx.in_dtype(j)), shape_str(ctx.in_shape(j)), i, x,
                         dtype_name(ctx.in_dtype(x)), shape_str(ctx.in_shape(x)));
    }
    for (int g = 0; g < out_groups; ++g)
      ctx.set_output(static_cast<size_t>(g * n + i), ctx.in_dtype(x), ctx.in_shape(x));
  }
  return n;
}

// Calls f(k, values) for every element k of tensor i: values[g] is element k of the tensor's
// group-g input; f returns the out_groups new values, written into the outputs.
template <int kIn, int kOut, typename F>
void update_elements(const Tensor* const* in, Tensor* const* out, int64_t n, int64_t i, F f) {
  const Tensor& x = *in[2 + i];
  for (int64_t k = 0; k < x.numel(); ++k) {
    double v[kIn];
    for (int g = 0; g < kIn; ++g) v[g] = in[2 + g * n + i]->get_f64(k);
    std::array<double, kOut> r = f(v);
    for (int g = 0; g < kOut; ++g) {
      Tensor& o = *out[g * n + i];
      if (o.dtype() == DType::kF32)
        o.data_as<float>()[k] = static_cast<float>(r[g]);
      else
        o.data_as<double>()[k] = r[g];
    }
  }
}

// Adagrad(R, T, X.., G.., H..) -> X_new.., H_new..: r = R / (1 + T * decay_factor),
// G' = norm_coefficient * X + G, H_new = H + G'^2, X_new = X - r * G' / (sqrt(H_new) + epsilon).
Result<KernelPtr> build_adagrad(BuildContext& ctx) {
  int64_t n;
  DLSYS_ASSIGN_OR_RETURN(n, check_update(ctx, 3, 2));
  double decay = ctx.attr_float("decay_factor", 0.f), eps = ctx.attr_float("epsilon", 0.f),
         norm = ctx.attr_float("norm_coefficient", 0.f);
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    double r = in[0]->get_f64(0) / (1 + static_cast<double>(in[1]->get_i64(0)) * decay);
    for (int64_t i = 0; i < n; ++i)
      update_elements<3, 2>(in, out, n, i, [&](const double* v) {
        double g = norm * v[0] + v[1], h = v[2] + g * g;
        return std::array<double, 2>{v[0] - r * g / (std::sqrt(h) + eps), h};
      });
    return Status::OK();
  });
}

// Momentum(R, T, X.., G.., V..) -> X_new.., V_new..: G' = norm_coefficient * X + G, V_new =
// alpha * V + beta' * G' (beta' = beta, or 1 on the first update, T = 0); standard: X_new = X -
// R * V_new; nesterov: X_new = X - R * (G' + alpha * V_new).
Result<KernelPtr> build_momentum(BuildContext& ctx) {
  int64_t n;
  DLSYS_ASSIGN_OR_RETURN(n, check_update(ctx, 3, 2));
  double alpha = ctx.attr_float("alpha", 0.f), beta = ctx.attr_float("beta", 0.f),
         norm = ctx.attr_float("norm_coefficient", 0.f);
  std::string mode = ctx.attr_string("mode", "standard");
  if (mode != "standard" && mode != "nesterov")
    return ctx.error("mode '{}' is not 'standard' or 'nesterov'", mode);
  bool nesterov = mode == "nesterov";
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    double r = in[0]->get_f64(0), b = in[1]->get_i64(0) > 0 ? beta : 1.0;
    for (int64_t i = 0; i < n; ++i)
      update_elements<3, 2>(in, out, n, i, [&](const double* v) {
        double g = norm * v[0] + v[1], vn = alpha * v[2] + b * g;
        return std::array<double, 2>{v[0] - r * (nesterov ? g + alpha * vn : vn), vn};
      });
    return Status::OK();
  });
}

// Adam(R, T, X.., G.., V.., H..) -> X_new.., V_new.., H_new..: G' = norm_coefficient * X + G,
// V_new = alpha * V + (1 - alpha) * G', H_new = beta * H + (1 - beta) * G'^2, R' = R *
// sqrt(1 - beta^T) / (1 - alpha^T) when T > 0 (else R), X_new = (1 - norm_coefficient_post) *
// (X - R' * V_new / (sqrt(H_new) + epsilon)).
Result<KernelPtr> build_adam(BuildContext& ctx) {
  int64_t n;
  DLSYS_ASSIGN_OR_RETURN(n, check_update(ctx, 4, 3));
  double alpha = ctx.attr_float("alpha", 0.9f), beta = ctx.attr_float("beta", 0.999f),
         eps = ctx.attr_float("epsilon", 1e-6f), norm = ctx.attr_float("norm_coefficient", 0.f),
         post = ctx.attr_float("norm_coefficient_post", 0.f);
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    double r = in[0]->get_f64(0);
    int64_t t = in[1]->get_i64(0);
    if (t > 0)
      r *= std::sqrt(1 - std::pow(beta, static_cast<double>(t))) /
           (1 - std::pow(alpha, static_cast<double>(t)));
    for (int64_t i = 0; i < n; ++i)
      update_elements<4, 3>(in, out, n, i, [&](const double* v) {
        double g = norm * v[0] + v[1];
        double vn = alpha * v[2] + (1 - alpha) * g, hn = beta * v[3] + (1 - beta) * g * g;
        double x = v[0] - r * vn / (std::sqrt(hn) + eps);
        return std::array<double, 3>{(1 - post) * x, vn, hn};
      });
    return Status::OK();
  });
}

}  // namespace

void register_optimizer_ops(OpRegistry& r) {
  r.add("Adagrad", 5, 2 + 3 * kMaxTensors, 2, 2 * kMaxTensors, build_adagrad);
  r.add("Momentum", 5, 2 + 3 * kMaxTensors, 2, 2 * kMaxTensors, build_momentum);
  r.add("Adam", 6, 2 + 4 * kMaxTensors, 3, 3 * kMaxTensors, build_adam);
  for (const char* op : {"Adagrad", "Momentum", "Adam"})
    r.set_domain(op, "ai.onnx.preview.training");
}

}  // namespace dlsys
