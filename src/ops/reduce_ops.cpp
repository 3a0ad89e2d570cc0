// ReduceMean/Sum/Max/Min/Prod/SumSquare (oneDNN's reduction for f32, a plain loop otherwise)
// and ArgMax/ArgMin.
#include <cmath>
#include <limits>

#include "ops/dispatch.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

enum class Red { kMean, kSum, kMax, kMin, kProd, kSumSquare, kL1, kL2, kLogSum, kLogSumExp };

Result<KernelPtr> build_reduce(BuildContext& ctx, Red op) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  const Shape& x = ctx.in_shape(0);
  int64_t rank = static_cast<int64_t>(x.size());
  std::vector<int64_t> axes;
  // Opset 13 made ReduceSum's axes an input; the others keep the attribute through 17.
  bool axes_as_input = op == Red::kSum;
  if (axes_as_input) {
    if (ctx.has_input(1)) {
      DLSYS_ASSIGN_OR_RETURN(axes, ctx.const_ints(1, "axes"));
    }
  } else {
    axes = ctx.attr_ints("axes");
  }
  bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  bool noop = ctx.attr_int("noop_with_empty_axes", 0) != 0;
  std::vector<bool> reduced(rank, false);
  if (axes.empty()) {
    if (noop) {
      ctx.alias_output(0, 0, x);
      return KernelPtr();
    }
    reduced.assign(rank, true);
  }
  for (int64_t a : axes) {
    int64_t n = normalize_axis(a, rank);
    if (n < 0) return ctx.error("axis {} is out of range for input {}", a, shape_str(x));
    reduced[n] = true;
  }
  Shape keep, out;
  for (int64_t i = 0; i < rank; ++i) {
    keep.push_back(reduced[i] ? 1 : x[i]);
    if (!reduced[i])
      out.push_back(x[i]);
    else if (keepdims)
      out.push_back(1);
  }
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, out);
  int64_t n_in = shape_numel(x), n_out = shape_numel(keep);
  // Fast path: f32 Mean/Sum over one run of consecutive axes, as [outer, R, inner] loops (oneDNN
  // 2.6 sends many of these shapes to its reference reduction, 10x slower).
  int64_t first = -1, last = -1;
  bool contiguous = true;
  for (int64_t i = 0; i < rank; ++i)
    if (reduced[i]) {
      if (first < 0) first = i;
      contiguous = contiguous && (last < 0 || last == i - 1);
      last = i;
    }
  if (t == DType::kF32 && (op == Red::kMean || op == Red::kSum) && contiguous && first >= 0 &&
      n_in > 0) {
    int64_t outer = 1, R = 1, inner = 1;
    for (int64_t i = 0; i < rank; ++i) (i < first ? outer : i <= last ? R : inner) *= x[i];
    float scale = op == Red::kMean ? 1.f / static_cast<float>(R) : 1.f;
    return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
      const float* X = in[0]->data_as<float>();
      float* Y = o[0]->data_as<float>();
#pragma omp parallel for if (outer * R * inner > 32768)
      for (int64_t b = 0; b < outer; ++b) {
        float* y = Y + b * inner;
        const float* xb = X + b * R * inner;
        if (inner == 1) {
          float acc = 0;
          for (int64_t r = 0; r < R; ++r) acc += xb[r];
          y[0] = acc * scale;
          continue;
        }
        for (int64_t j = 0; j < inner; ++j) y[j] = 0;
        for (int64_t r = 0; r < R; ++r)
          for (int64_t j = 0; j < inner; ++j) y[j] += xb[r * inner + j];
        for (int64_t j = 0; j < inner; ++j) y[j] *= scale;
      }
      return Status::OK();
    });
  }
  bool dnnl_alg = op == Red::kMean || op == Red::kSum || op == Red::kMax || op == Red::kMin ||
                  op == Red::kProd || op == Red::kSumSquare;
  if (t == DType::kF32 && n_in > 0 && keep != x && dnnl_alg) {
    dnnl::algorithm a;
    switch (op) {
      case Red::kMean:
        a = dnnl::algorithm::reduction_mean;
        break;
      case Red::kSum:
        a = dnnl::algorithm::reduction_sum;
        break;
      case Red::kMax:
        a = dnnl::algorithm::reduction_max;
        break;
      case Red::kMin:
        a = dnnl::algorithm::reduction_min;
        break;
      case Red::kProd:
        a = dnnl::algorithm::reduction_mul;
        break;
      default:  // kSumSquare (dnnl_alg excludes the rest)
        a = dnnl::algorithm::reduction_norm_lp_power_p_sum;
        break;
    }
    auto call = std::make_shared<DnnlCall>();
    bool ok = true;
    try {
      Shape xs = x.empty() ? Shape{1} : x, ks = keep.empty() ? Shape{1} : keep;
      auto src = plain_md(xs, DType::kF32), dst = plain_md(ks, DType::kF32);
      float p = op == Red::kSumSquare ? 2.f : 0.f;
      call->prim = dnnl::reduction(dnnl::reduction::primitive_desc(
          dnnl::reduction::desc(a, src, dst, p, 0.f), dnnl_attr(), dnnl_engine()));
      call->add(DNNL_ARG_SRC, src);
      call->add(DNNL_ARG_DST, dst);
    } catch (const dnnl::error&) {
      ok = false;
    }
    if (ok)
      return make_kernel([call](const Tensor* const* in, Tensor* const* o) {
        call->bind(DNNL_ARG_SRC, in[0]->data());
        call->bind(DNNL_ARG_DST, o[0]->data());
        call->exec();
        return Status::OK();
      });
  }
  // Plain loop: accumulate in double into a buffer made now, map each input element to its slot.
  std::vector<int64_t> ost = shape_strides(keep);
  for (int64_t i = 0; i < rank; ++i)
    if (reduced[i]) ost[i] = 0;
  std::vector<int64_t> ist = shape_strides(x);
  // LogSumExp subtracts each slot's maximum first (numerically stable): a second buffer.
  auto mx = std::make_shared<std::vector<double>>(op == Red::kLogSumExp ? n_out : 0);
  int64_t count = n_out ? n_in / n_out : 0;
  auto acc = std::make_shared<std::vector<double>>(n_out);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    std::vector<double>& a = *acc;
    double init = op == Red::kMax    ? -INFINITY
                  : op == Red::kMin  ? INFINITY
                  : op == Red::kProd ? 1
                                     : 0;
    std::fill(a.begin(), a.end(), init);
    DLSYS_DISPATCH_NUMERIC(t, T, {
      const T* X = in[0]->data_as<T>();
      auto slot = [&](int64_t i) {
        int64_t rem = i, oi = 0;
        for (int64_t d = 0; d < rank; ++d) {
          oi += (rem / ist[d]) * ost[d];
          rem %= ist[d];
        }
        return oi;
      };
      if (op == Red::kLogSumExp) {
        std::fill(mx->begin(), mx->end(), -INFINITY);
        for (int64_t i = 0; i < n_in; ++i)
          (*mx)[slot(i)] = std::max((*mx)[slot(i)], static_cast<double>(X[i]));
        for (double& m : *mx)
          if (!std::isfinite(m)) m = 0;
      }
      for (int64_t i = 0; i < n_in; ++i) {
        int64_t oi = slot(i);
        double v = static_cast<double>(X[i]);
        switch (op) {
          case Red::kMean:
          case Red::kSum:
            a[oi] += v;
            break;
          case Red::kSumSquare:
            a[oi] += v * v;
            break;
          case Red::kProd:
            a[oi] *= v;
            break;
          case Red::kMax:
            a[oi] = std::max(a[oi], v);
            break;
          case Red::kMin:
            a[oi] = std::min(a[oi], v);
            break;
          case Red::kL1:
            a[oi] += std::fabs(v);
            break;
          case Red::kL2:
            a[oi] += v * v;
            break;
          case Red::kLogSum:
            a[oi] += v;
            break;
          case Red::kLogSumExp:
            a[oi] += std::exp(v - (*mx)[oi]);
            break;
        }
      }
      T* Y = o[0]->data_as<T>();
      for (int64_t j = 0; j < n_out; ++j) {
        double v = a[j];
        if (op == Red::kMean) v = count ? a[j] / count : NAN;
        if (op == Red::kL2) v = std::sqrt(a[j]);
        if (op == Red::kLogSum) v = std::log(a[j]);
        if (op == Red::kLogSumExp) v = std::log(a[j]) + (*mx)[j];
        if constexpr (std::is_integral_v<T>) {
          if (!std::isfinite(v)) v = 0;
        }
        Y[j] = static_cast<T>(v);
      }
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_arg(BuildContext& ctx, bool is_max) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  const Shape& x = ctx.in_shape(0);
  int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = normalize_axis(ctx.attr_int("axis", 0), rank);
  if (axis < 0)
    return ctx.error("axis {} is out of range for input {}", ctx.attr_int("axis", 0), shape_str(x));
  bool keepdims = ctx.attr_int("keepdims", 1) != 0;
  bool last = ctx.attr_int("select_last_index", 0) != 0;
  Shape out;
  for (int64_t i = 0; i < rank; ++i) {
    if (i != axis)
      out.push_back(x[i]);
    else if (keepdims)
      out.push_back(1);
  }
  ctx.set_output(0, DType::kI64, out);
  AxisSplit sp = split_at_axis(x, axis);
  int64_t outer = sp.outer, n = sp.n, inner = sp.inner;
  DType t = ctx.in_dtype(0);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    int64_t* Y = o[0]->data_as<int64_t>();
    DLSYS_DISPATCH_NUMERIC(t, T, {
      const T* X = in[0]->data_as<T>();
      for (int64_t a = 0; a < outer; ++a)
        for (int64_t b = 0; b < inner; ++b) {
          int64_t best = 0;
          T bv = X[a * n * inner + b];
          for (int64_t k = 1; k < n; ++k) {
            T v = X[(a * n + k) * inner + b];
            bool better = is_max ? (last ? v >= bv : v > bv) : (last ? v <= bv : v < bv);
            if (better) {
              bv = v;
              best = k;
            }
          }
          Y[a * inner + b] = best;
        }
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_cumsum(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  const Shape& x = ctx.in_shape(0);
  std::vector<int64_t> ax;
  DLSYS_ASSIGN_OR_RETURN(ax, ctx.const_ints(1, "axis"));
  if (ax.size() != 1) return ctx.error("axis must hold one value");
  int64_t rank = static_cast<int64_t>(x.size());
  int64_t axis = normalize_axis(ax[0], rank);
  if (axis < 0) return ctx.error("axis {} is out of range for input {}", ax[0], shape_str(x));
  bool exclusive = ctx.attr_int("exclusive", 0) != 0, reverse = ctx.attr_int("reverse", 0) != 0;
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, x);
  AxisSplit sp = split_at_axis(x, axis);
  int64_t outer = sp.outer, n = sp.n, inner = sp.inner;
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_NUMERIC(t, T, {
      const T* X = in[0]->data_as<T>();
      T* Y = o[0]->data_as<T>();
      for (int64_t a = 0; a < outer; ++a)
        for (int64_t b = 0; b < inner; ++b) {
          T acc = 0;
          for (int64_t k = 0; k < n; ++k) {
            int64_t j = reverse ? n - 1 - k : k;
            int64_t idx = (a * n + j) * inner + b;
            if (exclusive) {
              Y[idx] = acc;
              acc = static_cast<T>(acc + X[idx]);
            } else {
              acc = static_cast<T>(acc + X[idx]);
              Y[idx] = acc;
            }
          }
        }
    });
    return Status::OK();
  });
}

}  // namespace

void register_reduce_ops(OpRegistry& r) {
  r.add("ReduceMean", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kMean); });
  r.add("ReduceSum", 1, 2, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kSum); });
  r.add("ReduceMax", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kMax); });
  r.add("ReduceMin", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kMin); });
  r.add("ReduceProd", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kProd); });
  r.add("ReduceSumSquare", 1, 1, 1, 1,
        [](BuildContext& c) { return build_reduce(c, Red::kSumSquare); });
  r.add("ReduceL1", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kL1); });
  r.add("ReduceL2", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kL2); });
  r.add("ReduceLogSum", 1, 1, 1, 1, [](BuildContext& c) { return build_reduce(c, Red::kLogSum); });
  r.add("ReduceLogSumExp", 1, 1, 1, 1,
        [](BuildContext& c) { return build_reduce(c, Red::kLogSumExp); });
  r.add("CumSum", 2, 2, 1, 1, build_cumsum);
  r.add("ArgMax", 1, 1, 1, 1, [](BuildContext& c) { return build_arg(c, true); });
  r.add("ArgMin", 1, 1, 1, 1, [](BuildContext& c) { return build_arg(c, false); });
}

}  // namespace dlsys
