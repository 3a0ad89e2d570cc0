// Shape-manipulating ops. Reshape-like ops alias their input buffer (no copy); Shape, Size,
// Constant, ConstantOfShape and Range produce values when the plan is built, which is how
// shape subgraphs (Shape -> Gather -> Concat -> Reshape) are evaluated before running.
#include <charconv>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>

#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/op_registry.h"
#include "ops/random.h"

namespace dlsys {
namespace {

Tensor i64_vector(const std::vector<int64_t>& v) {
  return Tensor::from_i64({static_cast<int64_t>(v.size())}, v.data());
}

Result<KernelPtr> build_reshape(BuildContext& ctx) {
  std::vector<int64_t> spec;
  DLSYS_ASSIGN_OR_RETURN(spec, ctx.const_ints(1, "shape"));
  const Shape& x = ctx.in_shape(0);
  bool allowzero = ctx.attr_int("allowzero", 0) != 0;
  Shape out(spec.size());
  int64_t infer = -1, known = 1;
  for (size_t i = 0; i < spec.size(); ++i) {
    int64_t d = spec[i];
    if (d == 0 && !allowzero) {
      if (i >= x.size())
        return ctx.error("shape {} copies dimension {} that input {} lacks", shape_str(spec), i,
                         shape_str(x));
      d = x[i];
    }
    if (d == -1) {
      if (infer >= 0) return ctx.error("shape {} has more than one -1", shape_str(spec));
      infer = static_cast<int64_t>(i);
      continue;
    }
    if (d < 0) return ctx.error("shape {} has a negative dimension", shape_str(spec));
    out[i] = d;
    known *= d;
  }
  int64_t n = shape_numel(x);
  if (infer >= 0) {
    if (known == 0 || n % known != 0)
      return ctx.error("cannot reshape input {} ({} elements) to {}", shape_str(x), n,
                       shape_str(spec));
    out[infer] = n / known;
  } else if (known != n) {
    return ctx.error("cannot reshape input {} ({} elements) to {} ({} elements)", shape_str(x), n,
                     shape_str(out), known);
  }
  ctx.alias_output(0, 0, out);
  return KernelPtr();
}

Result<KernelPtr> build_flatten(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  int64_t axis = ctx.attr_int("axis", 1);
  if (axis < 0) axis += r;
  if (axis < 0 || axis > r)
    return ctx.error("axis {} is out of range for input {}", ctx.attr_int("axis", 1), shape_str(x));
  int64_t a = 1, b = 1;
  for (int64_t i = 0; i < r; ++i) (i < axis ? a : b) *= x[i];
  ctx.alias_output(0, 0, {a, b});
  return KernelPtr();
}

Result<KernelPtr> build_squeeze(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  std::vector<bool> drop(r, false);
  if (ctx.has_input(1)) {
    std::vector<int64_t> axes;
    DLSYS_ASSIGN_OR_RETURN(axes, ctx.const_ints(1, "axes"));
    for (int64_t a : axes) {
      int64_t n = normalize_axis(a, r);
      if (n < 0) return ctx.error("axis {} is out of range for input {}", a, shape_str(x));
      if (x[n] != 1)
        return ctx.error("cannot squeeze axis {} of size {} (input {})", a, x[n], shape_str(x));
      drop[n] = true;
    }
  } else {
    for (int64_t i = 0; i < r; ++i) drop[i] = x[i] == 1;
  }
  Shape out;
  for (int64_t i = 0; i < r; ++i)
    if (!drop[i]) out.push_back(x[i]);
  ctx.alias_output(0, 0, out);
  return KernelPtr();
}

Result<KernelPtr> build_unsqueeze(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  std::vector<int64_t> axes;
  DLSYS_ASSIGN_OR_RETURN(axes, ctx.const_ints(1, "axes"));
  int64_t r = static_cast<int64_t>(x.size() + axes.size());
  std::vector<bool> ins(r, false);
  for (int64_t a : axes) {
    int64_t n = normalize_axis(a, r);
    if (n < 0 || ins[n])
      return ctx.error("axes {} are out of range or repeated for output rank {}", shape_str(axes),
                       r);
    ins[n] = true;
  }
  Shape out;
  size_t k = 0;
  for (int64_t i = 0; i < r; ++i) out.push_back(ins[i] ? 1 : x[k++]);
  ctx.alias_output(0, 0, out);
  return KernelPtr();
}

Result<KernelPtr> build_identity(BuildContext& ctx) {
  ctx.alias_output(0, 0, ctx.in_shape(0));
  return KernelPtr();
}

// Dropout(data, ratio?, training_mode?): the identity (mask all true) in inference, and also in
// training mode with ratio 0. training_mode and ratio must be known when the plan is built (a
// graph input is: Session specializes the plan on small inputs' values). Training mode with a
// ratio r in (0, 1) keeps each element with probability 1 - r, scaled by 1 / (1 - r), and
// zeroes the rest; the mask (output 1) says which were kept. The mask is drawn every run from
// the node's RandomSource (seeded by the `seed` attribute when present).
Result<KernelPtr> build_dropout(BuildContext& ctx) {
  float ratio = 0.5f;
  bool training = false;
  if (ctx.has_input(2)) {
    const Tensor* tm = ctx.in_value(2);
    if (!tm) return ctx.plan_time_value_missing(2, "training_mode");
    if (tm->numel() != 1)
      return ctx.error("training_mode must be one value, got shape {}", shape_str(tm->shape()));
    training = tm->get_i64(0) != 0;
  }
  if (training && ctx.has_input(1)) {
    const Tensor* r = ctx.in_value(1);
    if (!r) return ctx.plan_time_value_missing(1, "ratio");
    if (r->numel() != 1)
      return ctx.error("ratio must be one value, got shape {}", shape_str(r->shape()));
    ratio = static_cast<float>(r->get_f64(0));
  }
  if (training && !(ratio >= 0.f && ratio < 1.f))
    return ctx.error("ratio must be in [0, 1), got {}", ratio);
  if (!training || ratio == 0.f) {
    ctx.alias_output(0, 0, ctx.in_shape(0));
    if (ctx.num_outputs() > 1) {
      Tensor mask = Tensor::empty(DType::kBool, ctx.in_shape(0));
      std::memset(mask.data(), 1, mask.nbytes());
      ctx.set_output_value(1, mask);
    }
    return KernelPtr();
  }
  DType t = ctx.in_dtype(0);
  if (!dtype_is_float(t))
    return ctx.error("training mode needs a float input, got {}", dtype_name(t));
  ctx.set_output(0, t, ctx.in_shape(0));
  bool with_mask = ctx.num_outputs() > 1;
  if (with_mask) ctx.set_output(1, DType::kBool, ctx.in_shape(0));
  auto src = std::make_shared<RandomSource>(ctx);
  double keep = 1.0 - ratio, scale = 1.0 / keep;
  return make_kernel([src, keep, scale, with_mask](const Tensor* const* in, Tensor* const* out) {
    const Tensor& x = *in[0];
    for (int64_t i = 0; i < x.numel(); ++i) {
      bool kept = src->uniform() < keep;
      store_element(*out[0], i, kept ? x.get_f64(i) * scale : 0.0, 0, true);
      if (with_mask) out[1]->data_as<uint8_t>()[i] = kept;
    }
    return Status::OK();
  });
}

Result<KernelPtr> build_shape(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  int64_t start = ctx.attr_int("start", 0), end = ctx.attr_int("end", r);
  if (start < 0) start += r;
  if (end < 0) end += r;
  start = std::clamp<int64_t>(start, 0, r);
  end = std::clamp<int64_t>(end, 0, r);
  std::vector<int64_t> v;
  for (int64_t i = start; i < end; ++i) v.push_back(x[i]);
  ctx.set_output_value(0, i64_vector(v));
  return KernelPtr();
}

Result<KernelPtr> build_size(BuildContext& ctx) {
  int64_t n = shape_numel(ctx.in_shape(0));
  ctx.set_output_value(0, Tensor::from_i64({}, &n));
  return KernelPtr();
}

Result<KernelPtr> build_constant(BuildContext& ctx) {
  if (const Attribute* a = ctx.attr("value")) {
    if (!a->t.valid()) return ctx.error("attribute 'value' holds no tensor data");
    ctx.set_output_value(0, a->t);
  } else if (const Attribute* f = ctx.attr("value_float")) {
    ctx.set_output_value(0, Tensor::from_f32({}, &f->f));
  } else if (const Attribute* fs = ctx.attr("value_floats")) {
    ctx.set_output_value(
        0, Tensor::from_f32({static_cast<int64_t>(fs->floats.size())}, fs->floats.data()));
  } else if (const Attribute* i = ctx.attr("value_int")) {
    ctx.set_output_value(0, Tensor::from_i64({}, &i->i));
  } else if (const Attribute* is = ctx.attr("value_ints")) {
    ctx.set_output_value(0, i64_vector(is->ints));
  } else {
    return ctx.unsupported("only value, value_float(s) and value_int(s) constants are supported");
  }
  return KernelPtr();
}

Result<KernelPtr> build_constant_of_shape(BuildContext& ctx) {
  std::vector<int64_t> shape;
  DLSYS_ASSIGN_OR_RETURN(shape, ctx.const_ints(0, "shape"));
  for (int64_t d : shape)
    if (d < 0) return ctx.error("shape {} has a negative dimension", shape_str(shape));
  Tensor fill;
  if (const Attribute* a = ctx.attr("value")) {
    if (a->t.numel() != 1) return ctx.error("attribute 'value' must hold one element");
    fill = a->t;
  } else {
    float z = 0;
    fill = Tensor::from_f32({1}, &z);
  }
  Tensor out = Tensor::empty(fill.dtype(), shape);
  size_t es = dtype_size(fill.dtype());
  for (int64_t i = 0; i < out.numel(); ++i)
    std::memcpy(static_cast<char*>(out.data()) + i * es, fill.data(), es);
  ctx.set_output_value(0, out);
  return KernelPtr();
}

Result<KernelPtr> build_range(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i) {
    if (!ctx.in_value(i))
      return ctx.unsupported("start, limit and delta must be computable when the plan is built");
    if (ctx.in_dtype(i) != ctx.in_dtype(0))
      return ctx.error("start, limit and delta must share a dtype");
  }
  DType t = ctx.in_dtype(0);
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI16, DType::kI32, DType::kI64}));
  double start = ctx.in_value(0)->get_f64(0), limit = ctx.in_value(1)->get_f64(0),
         delta = ctx.in_value(2)->get_f64(0);
  if (delta == 0) return ctx.error("delta must not be zero");
  int64_t n = std::max<int64_t>(0, static_cast<int64_t>(std::ceil((limit - start) / delta)));
  Tensor out = Tensor::empty(t, {n});
  DLSYS_DISPATCH_NUMERIC(t, T, {
    T s = ctx.in_value(0)->data_as<T>()[0], d = ctx.in_value(2)->data_as<T>()[0];
    for (int64_t i = 0; i < n; ++i) out.data_as<T>()[i] = static_cast<T>(s + static_cast<T>(i) * d);
  });
  ctx.set_output_value(0, out);
  return KernelPtr();
}

// Element i of `src` as a T: floats go through double, integers through int64 (u64 through
// uint64), so every integer converts exactly. A float becomes an integer truncated toward zero
// (NaN, inf and values outside int64/uint64 give 0); a wider integer wraps into a narrower one.
template <typename T>
T element_as(const Tensor& src, int64_t i, bool from_float) {
  if (from_float) {
    double f = src.get_f64(i);
    if constexpr (std::is_floating_point_v<T>) {
      return static_cast<T>(f);
    } else {
      constexpr double kTwo63 = 9223372036854775808.0;
      if (!(f >= -kTwo63 && f < 2 * kTwo63)) return T(0);
      if (f >= kTwo63) return static_cast<T>(static_cast<uint64_t>(f));
      return static_cast<T>(static_cast<int64_t>(f));
    }
  }
  if (src.dtype() == DType::kU64) return static_cast<T>(src.data_as<uint64_t>()[i]);
  return static_cast<T>(src.get_i64(i));
}

// `d` as the float nearest it rounding to odd (toward zero, then the last bit set when inexact):
// a second rounding of that float to f16 or bf16 (fewer than 22 mantissa bits) then gives the
// correctly rounded result, which double -> float -> half rounding to nearest twice does not.
float f64_to_f32_odd(double d) {
  float f = static_cast<float>(d);
  if (!std::isfinite(d) || static_cast<double>(f) == d) return f;
  if (std::fabs(static_cast<double>(f)) > std::fabs(d)) f = std::nextafter(f, 0.f);
  uint32_t u;
  std::memcpy(&u, &f, 4);
  u |= 1u;
  std::memcpy(&f, &u, 4);
  return f;
}

// Element i of `src` as the float a cast to f16/bf16 rounds from (round-to-odd from double
// unless `src` is already f32/f16/bf16, whose values a float holds exactly).
float half_source(const Tensor& src, int64_t i, bool from_float) {
  DType t = src.dtype();
  if (t == DType::kF32 || t == DType::kF16 || t == DType::kBF16)
    return static_cast<float>(src.get_f64(i));
  return f64_to_f32_odd(element_as<double>(src, i, from_float));
}

template <typename S, typename D>
void convert_plain(const Tensor& src, Tensor& dst) {
  const S* x = src.data_as<S>();
  D* y = dst.data_as<D>();
  int64_t n = src.numel();
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<D>(x[i]);
}

// The casts to f32/f64 from the 8- to 32-bit integers and f32 as one loop the compiler
// vectorizes, with the general path's results (static_cast rounds an int32 to the nearest float
// as the path through int64 does). The general path reads every element through get_i64 /
// get_f64: ConvInteger's int32 -> f32 Cast took 2.8 ns an element. False: not one of these.
bool convert_fast(const Tensor& src, Tensor& dst) {
  DType to = dst.dtype();
  if (to != DType::kF32 && to != DType::kF64) return false;
  auto go = [&](auto tag) {
    using S = decltype(tag);
    if (to == DType::kF32)
      convert_plain<S, float>(src, dst);
    else
      convert_plain<S, double>(src, dst);
    return true;
  };
  switch (src.dtype()) {
    case DType::kI32:
      return go(int32_t{});
    case DType::kI16:
      return go(int16_t{});
    case DType::kU16:
      return go(uint16_t{});
    case DType::kI8:
      return go(int8_t{});
    case DType::kU8:
      return go(uint8_t{});
    case DType::kF32:
      return go(float{});
    default:
      return false;
  }
}

// Converts every element of `src` into `dst` (same shape, any two dtypes).
void convert(const Tensor& src, Tensor& dst) {
  if (convert_fast(src, dst)) return;
  int64_t n = src.numel();
  DType to = dst.dtype();
  bool from_float = dtype_is_float(src.dtype());
  switch (to) {
    case DType::kBool:
      for (int64_t i = 0; i < n; ++i)
        dst.data_as<uint8_t>()[i] = from_float ? src.get_f64(i) != 0 : src.get_i64(i) != 0;
      break;
    case DType::kBF16:
      for (int64_t i = 0; i < n; ++i)
        dst.data_as<uint16_t>()[i] = f32_to_bf16(half_source(src, i, from_float));
      break;
    case DType::kF16:
      for (int64_t i = 0; i < n; ++i)
        dst.data_as<uint16_t>()[i] = f32_to_f16(half_source(src, i, from_float));
      break;
    default:
      DLSYS_DISPATCH_NUMERIC(to, T, {
        T* y = dst.data_as<T>();
        for (int64_t i = 0; i < n; ++i) y[i] = element_as<T>(src, i, from_float);
      });
      break;
  }
}

// Converts input 0 to `t` (an alias when it already has that dtype).
Result<KernelPtr> cast_to(BuildContext& ctx, DType t) {
  if (t == ctx.in_dtype(0)) {
    ctx.alias_output(0, 0, ctx.in_shape(0));
    return KernelPtr();
  }
  ctx.set_output(0, t, ctx.in_shape(0));
  if (t == DType::kString) {
    // Numbers to text: floats as the shortest text that reads back to the same value (C++'s
    // to_chars, as NumPy prints float32), integers in decimal; NaN, INF and -INF as the cast
    // from STRING reads them. f16 and bf16 print their value as a float.
    const DType from = ctx.in_dtype(0);
    if (from == DType::kBool)
      return ctx.unsupported("a cast from BOOL to STRING is not supported (numbers only)");
    return make_kernel([from](const Tensor* const* in, Tensor* const* o) {
      std::string* y = o[0]->strings();
      char buf[64];
      for (int64_t i = 0; i < in[0]->numel(); ++i) {
        double v = in[0]->get_f64(i);
        if (std::isnan(v)) {
          y[i] = "NaN";
        } else if (std::isinf(v)) {
          y[i] = v > 0 ? "INF" : "-INF";
        } else if (from == DType::kF64) {
          auto r = std::to_chars(buf, buf + sizeof buf, v);
          y[i].assign(buf, r.ptr);
        } else if (dtype_is_float(from)) {
          auto r = std::to_chars(buf, buf + sizeof buf, static_cast<float>(v));
          y[i].assign(buf, r.ptr);
        } else if (from == DType::kU64) {
          y[i] = std::to_string(in[0]->data_as<uint64_t>()[i]);
        } else {
          y[i] = std::to_string(in[0]->get_i64(i));
        }
      }
      return Status::OK();
    });
  }
  if (ctx.in_dtype(0) == DType::kString) {
    if (t == DType::kBool)
      return ctx.unsupported("a cast from STRING to BOOL is not supported (to numbers only)");
    // Each string read as a number (C's strtod: "1.5", "1e3", "NaN", "INF", "-inf"), then
    // converted as a double would be.
    std::string node = ctx.node_name();
    return make_kernel([node](const Tensor* const* in, Tensor* const* o) {
      const std::string* x = in[0]->strings();
      const bool to_float = dtype_is_float(o[0]->dtype());
      for (int64_t i = 0; i < in[0]->numel(); ++i) {
        const char* begin = x[i].c_str();
        char* end = nullptr;
        double v = std::strtod(begin, &end);
        while (end && *end == ' ') ++end;
        if (end == begin || *end != '\0')
          return Status::Invalid("node '{}' (Cast): element {} is '{}', not a number", node, i,
                                 x[i].substr(0, 40));
        store_element(*o[0], i, v, to_float ? 0 : std::strtoll(begin, nullptr, 10), to_float);
      }
      return Status::OK();
    });
  }
  return make_kernel([](const Tensor* const* in, Tensor* const* o) {
    convert(*in[0], *o[0]);
    return Status::OK();
  });
}

Result<KernelPtr> build_cast(BuildContext& ctx) {
  auto to = dtype_from_onnx(static_cast<int>(ctx.attr_int("to", 0)));
  if (!to.ok()) return ctx.unsupported("{}", to.status().message());
  return cast_to(ctx, to.value());
}

Result<KernelPtr> build_cast_like(BuildContext& ctx) {
  return cast_to(ctx, ctx.in_dtype(1));
}

Result<KernelPtr> build_expand(BuildContext& ctx) {
  std::vector<int64_t> shape;
  DLSYS_ASSIGN_OR_RETURN(shape, ctx.const_ints(1, "shape"));
  auto r = broadcast_shapes(ctx.in_shape(0), shape);
  if (!r.ok()) return ctx.error("{}", r.status().message());
  Shape out = r.value();
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, out);
  std::vector<int64_t> st[1] = {broadcast_strides(ctx.in_shape(0), out)};
  return make_kernel([st, out, t](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* x = in[0]->data_as<T>();
      T* y = o[0]->data_as<T>();
      broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) { y[i] = x[off[0]]; });
    });
    return Status::OK();
  });
}

}  // namespace

void register_shape_ops(OpRegistry& r) {
  r.add("Reshape", 2, 2, 1, 1, build_reshape);
  r.add("Flatten", 1, 1, 1, 1, build_flatten);
  r.add("Squeeze", 1, 2, 1, 1, build_squeeze);
  r.add("Unsqueeze", 2, 2, 1, 1, build_unsqueeze);
  r.add("Identity", 1, 1, 1, 1, build_identity);
  r.add("Dropout", 1, 3, 1, 2, build_dropout);
  r.set_random("Dropout");  // the mask, in training mode
  r.add("Shape", 1, 1, 1, 1, build_shape);
  r.add("Size", 1, 1, 1, 1, build_size);
  r.add("Constant", 0, 0, 1, 1, build_constant);
  r.add("ConstantOfShape", 1, 1, 1, 1, build_constant_of_shape);
  r.add("Range", 3, 3, 1, 1, build_range);
  r.add("Cast", 1, 1, 1, 1, build_cast);
  r.add("Expand", 2, 2, 1, 1, build_expand);
  r.add("CastLike", 2, 2, 1, 1, build_cast_like);
  // Ops that only look at shapes, or alias their input, take strings as they take numbers.
  for (const char* op : {"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Shape", "Size"})
    r.set_strings(op, 1u, false);
  r.set_composites("Identity", 1u, false);  // an alias of a sequence or optional
  r.set_strings("Constant", 0u, true);
  r.set_strings("Cast", 1u, true);  // STRING <-> numbers
  r.set_strings("CastLike", 3u, true);
}

}  // namespace dlsys
