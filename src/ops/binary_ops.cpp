// Element-wise binary ops with NumPy broadcasting, comparisons, logic and Where. f32 arithmetic
// with a per-row operand ([.., S, S] op [.., S, 1]) is a row loop; other f32 arithmetic runs on
// oneDNN's binary primitive when the first source already has the output's shape (oneDNN 2.6
// broadcasts only the second source); everything else is a plain loop.
#include <array>
#include <cmath>

#include "ops/broadcast.h"
#include "ops/dispatch.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Bin {
  kAdd,
  kSub,
  kMul,
  kDiv,
  kPow,
  kEq,
  kLt,
  kGt,
  kLe,
  kGe,
  kAnd,
  kOr,
  kXor,
  kPRelu,
  kMax,
  kMin
};

bool is_compare(Bin op) {
  return op == Bin::kEq || op == Bin::kLt || op == Bin::kGt || op == Bin::kLe || op == Bin::kGe;
}
bool is_logic(Bin op) {
  return op == Bin::kAnd || op == Bin::kOr || op == Bin::kXor;
}

template <typename T>
T apply_arith(Bin op, T a, T b) {
  switch (op) {
    case Bin::kAdd:
      return static_cast<T>(a + b);
    case Bin::kSub:
      return static_cast<T>(a - b);
    case Bin::kMul:
      return static_cast<T>(a * b);
    case Bin::kDiv:
      if constexpr (std::is_integral_v<T>) {
        return b == 0 ? T(0) : static_cast<T>(a / b);
      } else {
        return a / b;
      }
    case Bin::kPRelu:
      return a < 0 ? static_cast<T>(a * b) : a;
    case Bin::kMax:
      return a > b ? a : b;
    case Bin::kMin:
      return a < b ? a : b;
    default:
      return T(0);
  }
}

template <typename T>
uint8_t apply_compare(Bin op, T a, T b) {
  switch (op) {
    case Bin::kEq:
      return a == b;
    case Bin::kLt:
      return a < b;
    case Bin::kGt:
      return a > b;
    case Bin::kLe:
      return a <= b;
    case Bin::kGe:
      return a >= b;
    default:
      return 0;
  }
}

double load_f64(const void* p, DType t, int64_t i) {
  double v = 0;
  DLSYS_DISPATCH_NUMERIC(t, T, v = static_cast<double>(static_cast<const T*>(p)[i]));
  return v;
}

// oneDNN binary for f32 when src0 has the output shape; returns null when not applicable.
KernelPtr try_dnnl_binary(BuildContext& ctx, Bin op, const Shape& out) {
  dnnl::algorithm a;
  bool commutative = false;
  switch (op) {
    case Bin::kAdd:
      a = dnnl::algorithm::binary_add;
      commutative = true;
      break;
    case Bin::kMul:
      a = dnnl::algorithm::binary_mul;
      commutative = true;
      break;
    case Bin::kSub:
      a = dnnl::algorithm::binary_sub;
      break;
    case Bin::kDiv:
      a = dnnl::algorithm::binary_div;
      break;
    case Bin::kMax:
      a = dnnl::algorithm::binary_max;
      commutative = true;
      break;
    case Bin::kMin:
      a = dnnl::algorithm::binary_min;
      commutative = true;
      break;
    default:
      return nullptr;
  }
  auto padded = [&](const Shape& s) {
    Shape p(out.size() - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  Shape s0 = padded(ctx.in_shape(0)), s1 = padded(ctx.in_shape(1));
  int first = 0;
  if (s0 != out) {
    if (!commutative || s1 != out) return nullptr;
    std::swap(s0, s1);
    first = 1;
  }
  if (shape_numel(out) == 0) return nullptr;
  auto call = std::make_shared<DnnlCall>();
  try {
    auto md0 = plain_md(s0, DType::kF32), md1 = plain_md(s1, DType::kF32);
    auto d = dnnl::binary::desc(a, md0, md1, md0);
    call->prim = dnnl::binary(dnnl::binary::primitive_desc(d, dnnl_attr(), dnnl_engine()));
    call->add(DNNL_ARG_SRC_0, md0);
    call->add(DNNL_ARG_SRC_1, md1);
    call->add(DNNL_ARG_DST, md0);
  } catch (const dnnl::error&) {
    return nullptr;
  }
  return make_kernel([call, first](const Tensor* const* in, Tensor* const* o) {
    call->bind(DNNL_ARG_SRC_0, in[first]->data());
    call->bind(DNNL_ARG_SRC_1, in[1 - first]->data());
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->exec();
    return Status::OK();
  });
}

// f32 Add/Sub/Mul/Div where one operand has the output's shape and the other is constant along
// the trailing dims (its shape: the output's leading dims, then 1s, e.g. [B, H, S, S] - [B, H, S,
// 1] in a softmax gradient): a loop over rows with the row's scalar. oneDNN 2.6 runs this
// broadcast on its reference kernel, element by element.
KernelPtr try_row_broadcast(BuildContext& ctx, Bin op, const Shape& out) {
  if (op != Bin::kAdd && op != Bin::kSub && op != Bin::kMul && op != Bin::kDiv) return nullptr;
  auto padded = [&](const Shape& s) {
    Shape p(out.size() - s.size(), 1);
    p.insert(p.end(), s.begin(), s.end());
    return p;
  };
  Shape s0 = padded(ctx.in_shape(0)), s1 = padded(ctx.in_shape(1));
  int full = s0 == out ? 0 : s1 == out ? 1 : -1;
  if (full < 0) return nullptr;
  const Shape& row = full == 0 ? s1 : s0;
  // row == out[0..k) followed by 1s, with at least one trailing dim of the output > 1.
  size_t k = 0;
  while (k < out.size() && row[k] == out[k]) ++k;
  for (size_t d = k; d < out.size(); ++d)
    if (row[d] != 1) return nullptr;
  int64_t inner = 1;
  for (size_t d = k; d < out.size(); ++d) inner *= out[d];
  int64_t rows = 1;
  for (size_t d = 0; d < k; ++d) rows *= out[d];
  // Few long rows (a scalar operand) or short rows: oneDNN's kernels do those well.
  if (inner < 8 || rows < 64) return nullptr;
  return make_kernel([op, full, inner, rows](const Tensor* const* in, Tensor* const* o) {
    const float* x = in[full]->data_as<float>();
    const float* r = in[1 - full]->data_as<float>();
    float* y = o[0]->data_as<float>();
#pragma omp parallel for if (rows * inner > 65536)
    for (int64_t i = 0; i < rows; ++i) {
      const float* xi = x + i * inner;
      float* yi = y + i * inner;
      float v = r[i];
      // Operand order matters for Sub and Div: `full` says which side x is on.
      switch (op) {
        case Bin::kAdd:
          for (int64_t j = 0; j < inner; ++j) yi[j] = xi[j] + v;
          break;
        case Bin::kMul:
          for (int64_t j = 0; j < inner; ++j) yi[j] = xi[j] * v;
          break;
        case Bin::kSub:
          if (full == 0)
            for (int64_t j = 0; j < inner; ++j) yi[j] = xi[j] - v;
          else
            for (int64_t j = 0; j < inner; ++j) yi[j] = v - xi[j];
          break;
        default:
          if (full == 0)
            for (int64_t j = 0; j < inner; ++j) yi[j] = xi[j] / v;
          else
            for (int64_t j = 0; j < inner; ++j) yi[j] = v / xi[j];
          break;
      }
    }
    return Status::OK();
  });
}

// f16 and bf16: each element widened to f32, computed there and rounded back once.
bool is_half(DType t) {
  return t == DType::kF16 || t == DType::kBF16;
}
float half_load(const uint16_t* p, int64_t i, bool bf) {
  return bf ? bf16_to_f32(p[i]) : f16_to_f32(p[i]);
}
uint16_t half_store(float v, bool bf) {
  return bf ? f32_to_bf16(v) : f32_to_f16(v);
}

// A broadcasting kernel over two f16 (or two bf16) inputs: y = f(a, b) computed in f32.
template <typename F>
KernelPtr half_binary_kernel(const Shape& out, std::vector<int64_t> st0, std::vector<int64_t> st1,
                             bool bf, F f) {
  std::vector<int64_t> st[2] = {std::move(st0), std::move(st1)};
  return make_kernel([st, out, bf, f](const Tensor* const* in, Tensor* const* o) {
    const uint16_t* a = in[0]->data_as<uint16_t>();
    const uint16_t* b = in[1]->data_as<uint16_t>();
    uint16_t* y = o[0]->data_as<uint16_t>();
    broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
      y[i] = half_store(f(half_load(a, off[0], bf), half_load(b, off[1], bf)), bf);
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_binary(BuildContext& ctx, Bin op) {
  DType ta = ctx.in_dtype(0), tb = ctx.in_dtype(1);
  if (is_half(ta) && ta == tb && !is_logic(op) && !is_compare(op) && op != Bin::kEq &&
      op != Bin::kPow) {
    auto r = broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1));
    if (!r.ok()) return ctx.error("{}", r.status().message());
    ctx.set_output(0, ta, r.value());
    return half_binary_kernel(r.value(), broadcast_strides(ctx.in_shape(0), r.value()),
                              broadcast_strides(ctx.in_shape(1), r.value()), ta == DType::kBF16,
                              [op](float a, float b) { return apply_arith<float>(op, a, b); });
  }
  if (op != Bin::kPow && ta != tb)
    return ctx.error("inputs have different dtypes ({} and {}); insert a Cast", dtype_name(ta),
                     dtype_name(tb));
  if (is_logic(op)) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kBool}));
  } else if (op == Bin::kEq) {
    DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(
        0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16, DType::kU16, DType::kI32,
            DType::kU32, DType::kI64, DType::kU64, DType::kBool}));
  } else {
    DLSYS_RETURN_IF_ERROR(
        ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                             DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
    if (op == Bin::kPow)
      DLSYS_RETURN_IF_ERROR(
          ctx.expect_dtype(1, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                               DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  }
  Shape out;
  {
    auto r = broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1));
    if (!r.ok()) return ctx.error("{}", r.status().message());
    out = r.value();
  }
  DType tout = (is_compare(op) || is_logic(op)) ? DType::kBool : ta;
  ctx.set_output(0, tout, out);
  if (ta == DType::kF32 && !is_compare(op)) {
    if (KernelPtr k = try_row_broadcast(ctx, op, out)) return k;
    if (KernelPtr k = try_dnnl_binary(ctx, op, out)) return k;
  }
  std::vector<int64_t> st[2] = {broadcast_strides(ctx.in_shape(0), out),
                                broadcast_strides(ctx.in_shape(1), out)};
  if (op == Bin::kPow) {
    bool square = ta == DType::kF32 && ctx.in_value(1) && ctx.in_value(1)->numel() == 1 &&
                  ctx.in_value(1)->get_f64(0) == 2.0;
    return make_kernel([st, out, ta, tb, square](const Tensor* const* in, Tensor* const* o) {
      const void* b = in[1]->data();
      DLSYS_DISPATCH_NUMERIC(ta, T, {
        const T* a = in[0]->data_as<T>();
        T* y = o[0]->data_as<T>();
        if (square) {
          broadcast_for_each(out, st,
                             [&](int64_t i, const int64_t* off) { y[i] = a[off[0]] * a[off[0]]; });
        } else {
          broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
            y[i] =
                static_cast<T>(std::pow(static_cast<double>(a[off[0]]), load_f64(b, tb, off[1])));
          });
        }
      });
      return Status::OK();
    });
  }
  if (is_logic(op)) {
    return make_kernel([st, out, op](const Tensor* const* in, Tensor* const* o) {
      const uint8_t* a = in[0]->data_as<uint8_t>();
      const uint8_t* b = in[1]->data_as<uint8_t>();
      uint8_t* y = o[0]->data_as<uint8_t>();
      broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
        bool x = a[off[0]] != 0, z = b[off[1]] != 0;
        y[i] = op == Bin::kAnd ? (x && z) : op == Bin::kOr ? (x || z) : (x != z);
      });
      return Status::OK();
    });
  }
  if (is_compare(op)) {
    DType t = ta == DType::kBool ? DType::kU8 : ta;
    return make_kernel([st, out, op, t](const Tensor* const* in, Tensor* const* o) {
      uint8_t* y = o[0]->data_as<uint8_t>();
      DLSYS_DISPATCH_NUMERIC(t, T, {
        const T* a = in[0]->data_as<T>();
        const T* b = in[1]->data_as<T>();
        broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
          y[i] = apply_compare<T>(op, a[off[0]], b[off[1]]);
        });
      });
      return Status::OK();
    });
  }
  return make_kernel([st, out, op, ta](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_NUMERIC(ta, T, {
      const T* a = in[0]->data_as<T>();
      const T* b = in[1]->data_as<T>();
      T* y = o[0]->data_as<T>();
      broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
        y[i] = apply_arith<T>(op, a[off[0]], b[off[1]]);
      });
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_where(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kBool}));
  if (ctx.in_dtype(1) != ctx.in_dtype(2))
    return ctx.error("X and Y have different dtypes ({} and {})", dtype_name(ctx.in_dtype(1)),
                     dtype_name(ctx.in_dtype(2)));
  auto r1 = broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1));
  if (!r1.ok()) return ctx.error("{}", r1.status().message());
  auto r2 = broadcast_shapes(r1.value(), ctx.in_shape(2));
  if (!r2.ok()) return ctx.error("{}", r2.status().message());
  Shape out = r2.value();
  DType t = ctx.in_dtype(1);
  ctx.set_output(0, t, out);
  std::vector<int64_t> st[3] = {broadcast_strides(ctx.in_shape(0), out),
                                broadcast_strides(ctx.in_shape(1), out),
                                broadcast_strides(ctx.in_shape(2), out)};
  return make_kernel([st, out, t](const Tensor* const* in, Tensor* const* o) {
    const uint8_t* c = in[0]->data_as<uint8_t>();
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* x = in[1]->data_as<T>();
      const T* y = in[2]->data_as<T>();
      T* z = o[0]->data_as<T>();
      broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
        z[i] = c[off[0]] ? x[off[1]] : y[off[2]];
      });
    });
    return Status::OK();
  });
}

// Variadic Max/Min/Sum/Mean: the two-input form uses the binary kernels (oneDNN for f32);
// otherwise the output starts as input 0 broadcast and folds the others in one at a time.
enum class Fold { kMax, kMin, kSum, kMean };

Result<KernelPtr> build_variadic(BuildContext& ctx, Fold op) {
  if (ctx.num_inputs() == 2 && op != Fold::kMean)
    return build_binary(ctx, op == Fold::kMax   ? Bin::kMax
                             : op == Fold::kMin ? Bin::kMin
                                                : Bin::kAdd);
  DType t = ctx.in_dtype(0);
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  Shape out = ctx.in_shape(0);
  for (size_t i = 1; i < ctx.num_inputs(); ++i) {
    if (ctx.in_dtype(i) != t)
      return ctx.error("input {} has dtype {}, input 0 has {}", i, dtype_name(ctx.in_dtype(i)),
                       dtype_name(t));
    auto r = broadcast_shapes(out, ctx.in_shape(i));
    if (!r.ok()) return ctx.error("{}", r.status().message());
    out = r.value();
  }
  ctx.set_output(0, t, out);
  size_t n = ctx.num_inputs();
  // Stride pairs for each fold step, made now: {output's own strides, input k's strides}.
  std::vector<int64_t> first[1] = {broadcast_strides(ctx.in_shape(0), out)};
  std::vector<std::array<std::vector<int64_t>, 2>> steps;
  for (size_t k = 1; k < n; ++k)
    steps.push_back({shape_strides(out), broadcast_strides(ctx.in_shape(k), out)});
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_NUMERIC(t, T, {
      T* y = o[0]->data_as<T>();
      const T* x0 = in[0]->data_as<T>();
      broadcast_for_each(out, first, [&](int64_t i, const int64_t* off) { y[i] = x0[off[0]]; });
      for (size_t k = 1; k < n; ++k) {
        const T* xk = in[k]->data_as<T>();
        broadcast_for_each_n<2>(out, steps[k - 1].data(), [&](int64_t i, const int64_t* off) {
          T v = xk[off[1]];
          switch (op) {
            case Fold::kMax:
              y[i] = v > y[i] ? v : y[i];
              break;
            case Fold::kMin:
              y[i] = v < y[i] ? v : y[i];
              break;
            default:
              y[i] = static_cast<T>(y[i] + v);
              break;
          }
        });
      }
      if (op == Fold::kMean)
        for (int64_t i = 0; i < o[0]->numel(); ++i) y[i] = static_cast<T>(y[i] / static_cast<T>(n));
    });
    return Status::OK();
  });
}

// ONNX Mod: fmod=1 takes the dividend's sign (C fmod); fmod=0 the divisor's (Python %).
template <typename T>
T mod_value(T x, T d, bool fmod) {
  if constexpr (std::is_integral_v<T>) {
    if (d == 0) return 0;
    T m = static_cast<T>(x % d);
    if (!fmod && m != 0 && ((m < 0) != (d < 0))) m = static_cast<T>(m + d);
    return m;
  } else {
    return std::fmod(x, d);
  }
}

Result<KernelPtr> build_mod(BuildContext& ctx) {
  DType t = ctx.in_dtype(0);
  if (ctx.in_dtype(1) != t)
    return ctx.error("inputs have different dtypes ({} and {})", dtype_name(t),
                     dtype_name(ctx.in_dtype(1)));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(
      0, {DType::kF32, DType::kF64, DType::kF16, DType::kBF16, DType::kI8, DType::kU8, DType::kI16,
          DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  bool fmod = ctx.attr_int("fmod", 0) != 0;
  if ((dtype_is_float(t) || is_half(t)) && !fmod)
    return ctx.error("floating-point Mod requires fmod=1 (ONNX spec)");
  auto r = broadcast_shapes(ctx.in_shape(0), ctx.in_shape(1));
  if (!r.ok()) return ctx.error("{}", r.status().message());
  Shape out = r.value();
  ctx.set_output(0, t, out);
  if (is_half(t))
    return half_binary_kernel(out, broadcast_strides(ctx.in_shape(0), out),
                              broadcast_strides(ctx.in_shape(1), out), t == DType::kBF16,
                              [](float a, float b) { return std::fmod(a, b); });
  std::vector<int64_t> st[2] = {broadcast_strides(ctx.in_shape(0), out),
                                broadcast_strides(ctx.in_shape(1), out)};
  return make_kernel([st, out, t, fmod](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_NUMERIC(t, T, {
      const T* a = in[0]->data_as<T>();
      const T* b = in[1]->data_as<T>();
      T* y = o[0]->data_as<T>();
      broadcast_for_each(out, st, [&](int64_t i, const int64_t* off) {
        y[i] = mod_value<T>(a[off[0]], b[off[1]], fmod);
      });
    });
    return Status::OK();
  });
}

}  // namespace

void register_binary_ops(OpRegistry& r) {
  r.add("Add", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kAdd); });
  r.add("Sub", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kSub); });
  r.add("Mul", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kMul); });
  r.add("Div", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kDiv); });
  r.add("Pow", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kPow); });
  r.add("PRelu", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kPRelu); });
  r.add("Equal", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kEq); });
  r.add("Less", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kLt); });
  r.add("Greater", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kGt); });
  r.add("LessOrEqual", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kLe); });
  r.add("GreaterOrEqual", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kGe); });
  r.add("And", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kAnd); });
  r.add("Or", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kOr); });
  r.add("Xor", 2, 2, 1, 1, [](BuildContext& c) { return build_binary(c, Bin::kXor); });
  r.add("Max", 1, 64, 1, 1, [](BuildContext& c) { return build_variadic(c, Fold::kMax); });
  r.add("Min", 1, 64, 1, 1, [](BuildContext& c) { return build_variadic(c, Fold::kMin); });
  r.add("Sum", 1, 64, 1, 1, [](BuildContext& c) { return build_variadic(c, Fold::kSum); });
  r.add("Mean", 1, 64, 1, 1, [](BuildContext& c) { return build_variadic(c, Fold::kMean); });
  r.add("Mod", 2, 2, 1, 1, build_mod);
  r.add("Where", 3, 3, 1, 1, build_where);
}

}  // namespace dlsys
