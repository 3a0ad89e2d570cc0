// RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike, Bernoulli and Multinomial:
// values drawn from a generator each kernel owns (a 64-bit Mersenne Twister), seeded from the
// node's `seed` attribute when it has one (two plans of one model then draw the same stream,
// run after run) and from std::random_device otherwise. Every run draws new values. The ops are
// marked random (OpSchema::random): the planner never evaluates them when the plan is built,
// even on constant inputs, and the optimizer neither folds nor merges them (pass_util's
// nondeterministic). Dropout's training mode draws its mask the same way (shape_ops.cpp).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "ops/dispatch.h"
#include "ops/op_registry.h"
#include "ops/random.h"

namespace dlsys {

RandomSource::RandomSource(const BuildContext& ctx) {
  if (const Attribute* a = ctx.attr("seed")) {
    // A float for the Random ops, an int for Dropout.
    uint64_t bits = 0;
    if (a->kind == Attribute::Kind::kFloat) {
      uint32_t fb;
      std::memcpy(&fb, &a->f, sizeof fb);
      bits = fb;
    } else {
      bits = static_cast<uint64_t>(a->i) ^ 0x9e3779b97f4a7c15ull;
    }
    engine_.seed(bits);
  } else {
    std::random_device device;
    engine_.seed((static_cast<uint64_t>(device()) << 32) | device());
  }
}

double RandomSource::uniform() {
  // 53 random bits: a double in [0, 1) with every value equally likely.
  return static_cast<double>(engine_() >> 11) * 0x1.0p-53;
}

double RandomSource::normal() {
  if (has_spare_) {
    has_spare_ = false;
    return spare_;
  }
  // Marsaglia's polar method: two independent standard normals per accepted pair.
  double u, v, s;
  do {
    u = 2 * uniform() - 1;
    v = 2 * uniform() - 1;
    s = u * u + v * v;
  } while (s >= 1 || s == 0);
  double f = std::sqrt(-2 * std::log(s) / s);
  spare_ = v * f;
  has_spare_ = true;
  return u * f;
}

namespace {

// The output dtype from the `dtype` attribute (an ONNX TensorProto type), else `fallback`;
// `what` lists the dtypes the op accepts, checked by `ok`.
template <typename Ok>
Result<DType> output_dtype(const BuildContext& ctx, DType fallback, Ok ok, const char* what) {
  DType t = fallback;
  if (ctx.has_attr("dtype")) {
    auto d = dtype_from_onnx(static_cast<int>(ctx.attr_int("dtype", 1)));
    if (!d.ok()) return ctx.error("dtype {}: {}", ctx.attr_int("dtype", 1), d.status().message());
    t = d.value();
  }
  if (!ok(t)) return ctx.error("output dtype {} is not {}", dtype_name(t), what);
  return t;
}

bool is_float(DType t) {
  return t == DType::kF32 || t == DType::kF64 || t == DType::kF16 || t == DType::kBF16;
}

// RandomNormal / RandomUniform (shape from the `shape` attribute) and their Like forms (the
// input's shape, and its dtype unless `dtype` is given).
Result<KernelPtr> build_random(BuildContext& ctx, bool normal, bool like) {
  Shape shape;
  DType fallback = DType::kF32;
  if (like) {
    shape = ctx.in_shape(0);
    fallback = ctx.in_dtype(0);
  } else {
    if (!ctx.has_attr("shape")) return ctx.error("needs the `shape` attribute");
    shape = ctx.attr_ints("shape");
    for (int64_t d : shape)
      if (d < 0) return ctx.error("shape {} has a negative dimension", shape_str(shape));
  }
  DType t;
  DLSYS_ASSIGN_OR_RETURN(t, output_dtype(ctx, fallback, is_float, "a float type"));
  double a = ctx.attr_float(normal ? "mean" : "low", 0.f);
  double b = ctx.attr_float(normal ? "scale" : "high", 1.f);
  if (!normal && !(b >= a)) return ctx.error("high {} is below low {}", b, a);
  if (normal && !(b >= 0)) return ctx.error("scale {} is negative", b);
  ctx.set_output(0, t, shape);
  auto src = std::make_shared<RandomSource>(ctx);
  return make_kernel([src, normal, a, b](const Tensor* const*, Tensor* const* out) {
    Tensor& y = *out[0];
    for (int64_t i = 0; i < y.numel(); ++i)
      store_element(y, i, normal ? a + b * src->normal() : a + (b - a) * src->uniform(), 0, true);
    return Status::OK();
  });
}

// Bernoulli(p) -> 1 with probability p[i], else 0; p is f32 or f64 (each in [0, 1], checked per
// run), the output any numeric type or bool (`dtype`, default p's).
Result<KernelPtr> build_bernoulli(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kF64}));
  DType t;
  DLSYS_ASSIGN_OR_RETURN(t, output_dtype(
                                ctx, ctx.in_dtype(0),
                                [](DType d) {
                                  switch (d) {
                                    case DType::kBool:
                                    case DType::kI8:
                                    case DType::kU8:
                                    case DType::kI16:
                                    case DType::kU16:
                                    case DType::kI32:
                                    case DType::kU32:
                                    case DType::kI64:
                                    case DType::kU64:
                                      return true;
                                    default:
                                      return is_float(d);
                                  }
                                },
                                "a number or bool"));
  ctx.set_output(0, t, ctx.in_shape(0));
  auto src = std::make_shared<RandomSource>(ctx);
  std::string node = ctx.node_name();
  return make_kernel([src, node](const Tensor* const* in, Tensor* const* out) {
    const Tensor& p = *in[0];
    for (int64_t i = 0; i < p.numel(); ++i) {
      double pi = p.get_f64(i);
      if (!(pi >= 0 && pi <= 1))
        return Status::Invalid(
            "node '{}' (Bernoulli): element {} of the input is {}, not a "
            "probability in [0, 1]",
            node, i, pi);
      store_element(*out[0], i, 0, src->uniform() < pi ? 1 : 0, false);
    }
    return Status::OK();
  });
}

// Multinomial(x [batch, classes]) -> [batch, sample_size] class indices (int32 or int64, the
// `dtype` attribute, default int32) drawn from softmax(x[b]): x holds unnormalized log
// probabilities.
Result<KernelPtr> build_multinomial(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32, DType::kF64}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() != 2) return ctx.error("input must be [batch, classes], got {}", shape_str(x));
  if (x[1] < 1) return ctx.error("input {} has no classes", shape_str(x));
  int64_t samples = ctx.attr_int("sample_size", 1);
  if (samples < 1) return ctx.error("sample_size {} must be at least 1", samples);
  DType t;
  DLSYS_ASSIGN_OR_RETURN(
      t, output_dtype(
             ctx, DType::kI32, [](DType d) { return d == DType::kI32 || d == DType::kI64; },
             "int32 or int64"));
  ctx.set_output(0, t, {x[0], samples});
  auto src = std::make_shared<RandomSource>(ctx);
  auto cdf = std::make_shared<std::vector<double>>(x[1]);
  return make_kernel([src, cdf](const Tensor* const* in, Tensor* const* out) {
    const Tensor& xv = *in[0];
    int64_t batch = xv.shape()[0], classes = xv.shape()[1], samples = out[0]->shape()[1];
    for (int64_t b = 0; b < batch; ++b) {
      double mx = -INFINITY;
      for (int64_t c = 0; c < classes; ++c) mx = std::max(mx, xv.get_f64(b * classes + c));
      double total = 0;
      for (int64_t c = 0; c < classes; ++c) {
        total += std::isinf(mx) ? 1.0 : std::exp(xv.get_f64(b * classes + c) - mx);
        (*cdf)[c] = total;
      }
      for (int64_t s = 0; s < samples; ++s) {
        double u = src->uniform() * total;
        int64_t c = std::upper_bound(cdf->begin(), cdf->end(), u) - cdf->begin();
        store_element(*out[0], b * samples + s, 0, std::min(c, classes - 1), false);
      }
    }
    return Status::OK();
  });
}

}  // namespace

void register_random_ops(OpRegistry& r) {
  r.add("RandomNormal", 0, 0, 1, 1, [](BuildContext& c) { return build_random(c, true, false); });
  r.add("RandomUniform", 0, 0, 1, 1, [](BuildContext& c) { return build_random(c, false, false); });
  r.add("RandomNormalLike", 1, 1, 1, 1,
        [](BuildContext& c) { return build_random(c, true, true); });
  r.add("RandomUniformLike", 1, 1, 1, 1,
        [](BuildContext& c) { return build_random(c, false, true); });
  r.add("Bernoulli", 1, 1, 1, 1, build_bernoulli);
  r.add("Multinomial", 1, 1, 1, 1, build_multinomial);
  for (const char* op : {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                         "Bernoulli", "Multinomial"})
    r.set_random(op);
}

}  // namespace dlsys
