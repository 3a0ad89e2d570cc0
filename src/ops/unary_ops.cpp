// Element-wise unary ops: oneDNN eltwise for f32 where it has the algorithm, plain loops
// elsewhere (Erf, HardSigmoid, HardSwish, integer and bool inputs, and f64: the math functions
// (Exp, Log, Sqrt, Sigmoid, Tanh, trigonometry, Floor, Ceil, Round, ...) compute it in double).
#include <cmath>

#include "ops/dispatch.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

using alg = dnnl::algorithm;

// A oneDNN eltwise over the flattened tensor.
Result<KernelPtr> dnnl_eltwise(BuildContext& ctx, alg a, float alpha, float beta) {
  int64_t n = shape_numel(ctx.in_shape(0));
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  if (n == 0) return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  auto call = std::make_shared<DnnlCall>();
  auto md = plain_md({n}, DType::kF32);
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto d = dnnl::eltwise_forward::desc(dnnl::prop_kind::forward_inference, a, md, alpha, beta);
    call->prim =
        dnnl::eltwise_forward(dnnl::eltwise_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
  }));
  call->add(DNNL_ARG_SRC, md);
  call->add(DNNL_ARG_DST, md);
  return make_kernel([call](const Tensor* const* in, Tensor* const* out) {
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_DST, out[0]->data());
    call->exec();
    return Status::OK();
  });
}

// A plain f32 loop.
template <typename F>
Result<KernelPtr> f32_map(BuildContext& ctx, F f) {
  ctx.set_output(0, DType::kF32, ctx.in_shape(0));
  return make_kernel([f](const Tensor* const* in, Tensor* const* out) {
    const float* x = in[0]->data_as<float>();
    float* y = out[0]->data_as<float>();
    int64_t n = in[0]->numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
    return Status::OK();
  });
}

// A loop over any numeric dtype with the same function.
template <typename F>
Result<KernelPtr> numeric_map(BuildContext& ctx, F f) {
  DType t = ctx.in_dtype(0);
  // The loop below covers DLSYS_DISPATCH_NUMERIC's dtypes only: any other would leave the output
  // unwritten.
  if (t == DType::kBool || t == DType::kString)
    return ctx.unsupported("input of dtype {}: this op runs on floating-point and integer tensors",
                           dtype_name(t));
  ctx.set_output(0, t, ctx.in_shape(0));
  if (t == DType::kF16 || t == DType::kBF16) {
    // Widened to f32, computed there, rounded back once.
    const bool bf = t == DType::kBF16;
    return make_kernel([f, bf](const Tensor* const* in, Tensor* const* out) {
      int64_t n = in[0]->numel();
      const uint16_t* x = in[0]->data_as<uint16_t>();
      uint16_t* y = out[0]->data_as<uint16_t>();
      for (int64_t i = 0; i < n; ++i) {
        const float v = static_cast<float>(f(bf ? bf16_to_f32(x[i]) : f16_to_f32(x[i])));
        y[i] = bf ? f32_to_bf16(v) : f32_to_f16(v);
      }
      return Status::OK();
    });
  }
  return make_kernel([f, t](const Tensor* const* in, Tensor* const* out) {
    int64_t n = in[0]->numel();
    DLSYS_DISPATCH_NUMERIC(t, T, {
      const T* x = in[0]->data_as<T>();
      T* y = out[0]->data_as<T>();
      for (int64_t i = 0; i < n; ++i) y[i] = static_cast<T>(f(x[i]));
    });
    return Status::OK();
  });
}

// A plain f64 loop (f64 has no oneDNN type).
template <typename F>
Result<KernelPtr> f64_map(BuildContext& ctx, F f) {
  ctx.set_output(0, DType::kF64, ctx.in_shape(0));
  return make_kernel([f](const Tensor* const* in, Tensor* const* out) {
    const double* x = in[0]->data_as<double>();
    double* y = out[0]->data_as<double>();
    int64_t n = in[0]->numel();
#pragma omp parallel for if (n > 65536)
    for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
    return Status::OK();
  });
}

Status need_f32(BuildContext& ctx) {
  return ctx.expect_dtype(0, {DType::kF32});
}

#define F32_ONLY() DLSYS_RETURN_IF_ERROR(need_f32(ctx))
// f32 or f64: an f64 input runs `f64_fn` (the same math in double) in a plain loop.
#define F32_OR_F64(f64_fn)                                                \
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kF64})); \
  if (ctx.in_dtype(0) == DType::kF64) return f64_map(ctx, f64_fn)

Result<KernelPtr> build_relu(BuildContext& ctx) {
  if (ctx.in_dtype(0) != DType::kF32)
    return numeric_map(ctx, [](auto v) { return v > 0 ? v : decltype(v)(0); });
  return dnnl_eltwise(ctx, alg::eltwise_relu, 0.f, 0.f);
}
Result<KernelPtr> build_leaky_relu(BuildContext& ctx) {
  F32_ONLY();
  return dnnl_eltwise(ctx, alg::eltwise_relu, ctx.attr_float("alpha", 0.01f), 0.f);
}
Result<KernelPtr> build_sigmoid(BuildContext& ctx) {
  F32_OR_F64([](double v) { return 1 / (1 + std::exp(-v)); });
  return dnnl_eltwise(ctx, alg::eltwise_logistic, 0.f, 0.f);
}
Result<KernelPtr> build_tanh(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::tanh(v); });
  return dnnl_eltwise(ctx, alg::eltwise_tanh, 0.f, 0.f);
}
Result<KernelPtr> build_exp(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::exp(v); });
  return dnnl_eltwise(ctx, alg::eltwise_exp, 0.f, 0.f);
}
Result<KernelPtr> build_log(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::log(v); });
  return dnnl_eltwise(ctx, alg::eltwise_log, 0.f, 0.f);
}
Result<KernelPtr> build_sqrt(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::sqrt(v); });
  return dnnl_eltwise(ctx, alg::eltwise_sqrt, 0.f, 0.f);
}
Result<KernelPtr> build_abs(BuildContext& ctx) {
  if (ctx.in_dtype(0) != DType::kF32)
    return numeric_map(ctx, [](auto v) { return v < 0 ? -v : v; });
  return dnnl_eltwise(ctx, alg::eltwise_abs, 0.f, 0.f);
}
Result<KernelPtr> build_neg(BuildContext& ctx) {
  if (ctx.in_dtype(0) != DType::kF32) return numeric_map(ctx, [](auto v) { return -v; });
  return dnnl_eltwise(ctx, alg::eltwise_linear, -1.f, 0.f);
}
Result<KernelPtr> build_reciprocal(BuildContext& ctx) {
  F32_OR_F64([](double v) { return 1 / v; });
  return f32_map(ctx, [](float v) { return 1.f / v; });
}
Result<KernelPtr> build_floor(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::floor(v); });
  return f32_map(ctx, [](float v) { return std::floor(v); });
}
Result<KernelPtr> build_ceil(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::ceil(v); });
  return f32_map(ctx, [](float v) { return std::ceil(v); });
}
Result<KernelPtr> build_erf(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::erf(v); });
  return f32_map(ctx, [](float v) { return std::erf(v); });
}
Result<KernelPtr> build_gelu(BuildContext& ctx) {
  F32_ONLY();
  std::string approx = ctx.attr_string("approximate", "none");
  if (approx == "tanh") return dnnl_eltwise(ctx, alg::eltwise_gelu_tanh, 0.f, 0.f);
  if (approx != "none")
    return ctx.error("attribute approximate='{}' must be 'none' or 'tanh'", approx);
  return dnnl_eltwise(ctx, alg::eltwise_gelu_erf, 0.f, 0.f);
}
Result<KernelPtr> build_hard_sigmoid(BuildContext& ctx) {
  F32_ONLY();
  float a = ctx.attr_float("alpha", 0.2f), b = ctx.attr_float("beta", 0.5f);
  return f32_map(ctx, [a, b](float v) { return std::fmax(0.f, std::fmin(1.f, a * v + b)); });
}
Result<KernelPtr> build_hard_swish(BuildContext& ctx) {
  F32_ONLY();
  return f32_map(
      ctx, [](float v) { return v * std::fmax(0.f, std::fmin(1.f, v * (1.f / 6.f) + 0.5f)); });
}
Result<KernelPtr> build_softplus(BuildContext& ctx) {
  F32_ONLY();
  return f32_map(ctx, [](float v) { return v > 20.f ? v : std::log1p(std::exp(v)); });
}
Result<KernelPtr> build_elu(BuildContext& ctx) {
  F32_ONLY();
  float a = ctx.attr_float("alpha", 1.0f);
  return f32_map(ctx, [a](float v) { return v > 0 ? v : a * (std::exp(v) - 1.f); });
}

Result<KernelPtr> build_sin(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::sin(v); });
  return f32_map(ctx, [](float v) { return std::sin(v); });
}
Result<KernelPtr> build_cos(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::cos(v); });
  return f32_map(ctx, [](float v) { return std::cos(v); });
}
// The rest of ONNX's trigonometric and hyperbolic functions, f32 and f64.
template <float (*F)(float), double (*D)(double)>
Result<KernelPtr> build_math(BuildContext& ctx) {
  F32_OR_F64([](double v) { return D(v); });
  return f32_map(ctx, [](float v) { return F(v); });
}
// Shrink: x < -lambd ? x + bias : x > lambd ? x - bias : 0.
Result<KernelPtr> build_shrink(BuildContext& ctx) {
  F32_ONLY();
  const float lambd = ctx.attr_float("lambd", 0.5f), bias = ctx.attr_float("bias", 0.f);
  return f32_map(
      ctx, [lambd, bias](float v) { return v < -lambd ? v + bias : (v > lambd ? v - bias : 0.f); });
}
Result<KernelPtr> build_round(BuildContext& ctx) {
  F32_OR_F64([](double v) { return std::nearbyint(v); });
  return f32_map(ctx, [](float v) { return std::nearbyint(v); });  // half to even
}
Result<KernelPtr> build_softsign(BuildContext& ctx) {
  F32_OR_F64([](double v) { return v / (1 + std::fabs(v)); });
  return f32_map(ctx, [](float v) { return v / (1.f + std::fabs(v)); });
}
Result<KernelPtr> build_selu(BuildContext& ctx) {
  F32_ONLY();
  float a = ctx.attr_float("alpha", 1.67326319217681884765625f);
  float g = ctx.attr_float("gamma", 1.05070102214813232421875f);
  return f32_map(ctx, [a, g](float v) { return v > 0 ? g * v : g * (a * std::exp(v) - a); });
}
Result<KernelPtr> build_celu(BuildContext& ctx) {
  F32_ONLY();
  float a = ctx.attr_float("alpha", 1.f);
  return f32_map(ctx, [a](float v) {
    return std::fmax(0.f, v) + std::fmin(0.f, a * (std::exp(v / a) - 1.f));
  });
}
Result<KernelPtr> build_thresholded_relu(BuildContext& ctx) {
  F32_ONLY();
  float a = ctx.attr_float("alpha", 1.f);
  return f32_map(ctx, [a](float v) { return v > a ? v : 0.f; });
}
Result<KernelPtr> build_sign(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  return numeric_map(ctx, [](auto v) { return (v > 0) - (v < 0); });
}
// IsNaN / IsInf: f32 or f64 in, bool out.
Result<KernelPtr> build_float_test(BuildContext& ctx, bool nan) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kF64}));
  bool pos = ctx.attr_int("detect_positive", 1) != 0, neg = ctx.attr_int("detect_negative", 1) != 0;
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, DType::kBool, ctx.in_shape(0));
  return make_kernel([nan, pos, neg, t](const Tensor* const* in, Tensor* const* out) {
    uint8_t* y = out[0]->data_as<uint8_t>();
    auto test = [&](const auto* x) {
      for (int64_t i = 0; i < in[0]->numel(); ++i)
        y[i] =
            nan ? std::isnan(x[i]) : (std::isinf(x[i]) && ((x[i] > 0 && pos) || (x[i] < 0 && neg)));
    };
    if (t == DType::kF64)
      test(in[0]->data_as<double>());
    else
      test(in[0]->data_as<float>());
    return Status::OK();
  });
}

Result<KernelPtr> build_clip(BuildContext& ctx) {
  DType t = ctx.in_dtype(0);
  for (size_t i = 1; i < 3; ++i)
    if (ctx.has_input(i) && (ctx.in_dtype(i) != t || shape_numel(ctx.in_shape(i)) != 1))
      return ctx.error("min and max must be scalars of the input's dtype");
  if (t == DType::kF32 && (!ctx.has_input(1) || ctx.in_value(1)) &&
      (!ctx.has_input(2) || ctx.in_value(2))) {
    float lo = ctx.has_input(1) ? ctx.in_value(1)->data_as<float>()[0] : -INFINITY;
    float hi = ctx.has_input(2) ? ctx.in_value(2)->data_as<float>()[0] : INFINITY;
    if (lo > hi) return f32_map(ctx, [hi](float) { return hi; });
    return dnnl_eltwise(ctx, alg::eltwise_clip_v2, lo, hi);
  }
  ctx.set_output(0, t, ctx.in_shape(0));
  bool has_lo = ctx.has_input(1), has_hi = ctx.has_input(2);
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  return make_kernel([t, has_lo, has_hi](const Tensor* const* in, Tensor* const* out) {
    int64_t n = in[0]->numel();
    DLSYS_DISPATCH_NUMERIC(t, T, {
      T lo = has_lo ? in[1]->data_as<T>()[0] : std::numeric_limits<T>::lowest();
      T hi = has_hi ? in[2]->data_as<T>()[0] : std::numeric_limits<T>::max();
      const T* x = in[0]->data_as<T>();
      T* y = out[0]->data_as<T>();
      for (int64_t i = 0; i < n; ++i) y[i] = x[i] < lo ? lo : (x[i] > hi ? hi : x[i]);
      if (lo > hi)
        for (int64_t i = 0; i < n; ++i) y[i] = hi;
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_not(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kBool}));
  ctx.set_output(0, DType::kBool, ctx.in_shape(0));
  return make_kernel([](const Tensor* const* in, Tensor* const* out) {
    const uint8_t* x = in[0]->data_as<uint8_t>();
    uint8_t* y = out[0]->data_as<uint8_t>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) y[i] = !x[i];
    return Status::OK();
  });
}

}  // namespace

void register_unary_ops(OpRegistry& r) {
  r.add("Relu", 1, 1, 1, 1, build_relu);
  r.add("LeakyRelu", 1, 1, 1, 1, build_leaky_relu);
  r.add("Sigmoid", 1, 1, 1, 1, build_sigmoid);
  r.add("Tanh", 1, 1, 1, 1, build_tanh);
  r.add("Exp", 1, 1, 1, 1, build_exp);
  r.add("Log", 1, 1, 1, 1, build_log);
  r.add("Sqrt", 1, 1, 1, 1, build_sqrt);
  r.add("Abs", 1, 1, 1, 1, build_abs);
  r.add("Neg", 1, 1, 1, 1, build_neg);
  r.add("Reciprocal", 1, 1, 1, 1, build_reciprocal);
  r.add("Floor", 1, 1, 1, 1, build_floor);
  r.add("Ceil", 1, 1, 1, 1, build_ceil);
  r.add("Erf", 1, 1, 1, 1, build_erf);
  r.add("Gelu", 1, 1, 1, 1, build_gelu);
  r.add("HardSigmoid", 1, 1, 1, 1, build_hard_sigmoid);
  r.add("HardSwish", 1, 1, 1, 1, build_hard_swish);
  r.add("Softplus", 1, 1, 1, 1, build_softplus);
  r.add("Elu", 1, 1, 1, 1, build_elu);
  r.add("Clip", 1, 3, 1, 1, build_clip);
  r.add("Not", 1, 1, 1, 1, build_not);
  r.add("Sin", 1, 1, 1, 1, build_sin);
  r.add("Cos", 1, 1, 1, 1, build_cos);
  r.add("Tan", 1, 1, 1, 1, build_math<std::tan, std::tan>);
  r.add("Asin", 1, 1, 1, 1, build_math<std::asin, std::asin>);
  r.add("Acos", 1, 1, 1, 1, build_math<std::acos, std::acos>);
  r.add("Atan", 1, 1, 1, 1, build_math<std::atan, std::atan>);
  r.add("Sinh", 1, 1, 1, 1, build_math<std::sinh, std::sinh>);
  r.add("Cosh", 1, 1, 1, 1, build_math<std::cosh, std::cosh>);
  r.add("Asinh", 1, 1, 1, 1, build_math<std::asinh, std::asinh>);
  r.add("Acosh", 1, 1, 1, 1, build_math<std::acosh, std::acosh>);
  r.add("Atanh", 1, 1, 1, 1, build_math<std::atanh, std::atanh>);
  r.add("Shrink", 1, 1, 1, 1, build_shrink);
  r.add("Round", 1, 1, 1, 1, build_round);
  r.add("Softsign", 1, 1, 1, 1, build_softsign);
  r.add("Selu", 1, 1, 1, 1, build_selu);
  r.add("Celu", 1, 1, 1, 1, build_celu);
  r.add("ThresholdedRelu", 1, 1, 1, 1, build_thresholded_relu);
  r.add("Sign", 1, 1, 1, 1, build_sign);
  r.add("IsNaN", 1, 1, 1, 1, [](BuildContext& c) { return build_float_test(c, true); });
  r.add("IsInf", 1, 1, 1, 1, [](BuildContext& c) { return build_float_test(c, false); });
}

}  // namespace dlsys
