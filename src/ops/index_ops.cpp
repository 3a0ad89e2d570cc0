// Ops that pick, place or rank elements by index, as plain loops: GatherND, ScatterND,
// ScatterElements, TopK, OneHot, Compress, EyeLike, ReverseSequence.
//
// Elements move as bytes (any dtype); the reductions of ScatterND/ScatterElements (`reduction`
// add, mul, max, min) and TopK's comparisons are typed (every numeric dtype of
// DLSYS_DISPATCH_NUMERIC). An index outside its dimension fails the run with the node's
// name, the index and the bound; negative indices count from the end, as ONNX says. Output shapes
// that depend on values (TopK's K, OneHot's depth) need those values when the plan is built (a
// small value computed while running splits the plan there: graph/plan.h); Compress's output
// is dynamic when its condition is computed while running.
#include <algorithm>
#include <cstring>
#include <numeric>

#include "ops/dispatch.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

int64_t index_at(const Tensor& t, int64_t i) {
  return t.dtype() == DType::kI32 ? t.data_as<int32_t>()[i] : t.data_as<int64_t>()[i];
}

// Wraps a negative index; false when it stays outside [0, dim).
bool wrap_index(int64_t* i, int64_t dim) {
  if (*i < 0) *i += dim;
  return *i >= 0 && *i < dim;
}

enum class Reduction { kNone, kAdd, kMul, kMax, kMin };

Result<Reduction> read_reduction(BuildContext& ctx) {
  const std::string r = ctx.attr_string("reduction", "none");
  if (r == "none") return Reduction::kNone;
  if (r == "add") return Reduction::kAdd;
  if (r == "mul") return Reduction::kMul;
  if (r == "max") return Reduction::kMax;
  if (r == "min") return Reduction::kMin;
  return ctx.error("reduction '{}' is not one of none, add, mul, max, min", r);
}

template <typename T>
void reduce_into(T* dst, const T* src, int64_t n, Reduction r) {
  for (int64_t i = 0; i < n; ++i) {
    switch (r) {
      case Reduction::kNone:
        dst[i] = src[i];
        break;
      case Reduction::kAdd:
        dst[i] += src[i];
        break;
      case Reduction::kMul:
        dst[i] *= src[i];
        break;
      case Reduction::kMax:
        dst[i] = std::max(dst[i], src[i]);
        break;
      case Reduction::kMin:
        dst[i] = std::min(dst[i], src[i]);
        break;
    }
  }
}

// Writes n elements of `src` into `dst` by the reduction (a copy for none).
void place(DType t, void* dst, const void* src, int64_t n, Reduction r) {
  if (r == Reduction::kNone) {
    std::memcpy(dst, src, static_cast<size_t>(n) * dtype_size(t));
    return;
  }
  DLSYS_DISPATCH_NUMERIC(t, T, reduce_into(static_cast<T*>(dst), static_cast<const T*>(src), n, r));
}

Status check_reducible(BuildContext& ctx, Reduction r, DType t) {
  if (r != Reduction::kNone && (t == DType::kF16 || t == DType::kBF16 || t == DType::kBool))
    return ctx.unsupported(
        "reduction on {} data; dlsys reduces f32, f64, i8, u8, i16, u16, i32, u32, i64 and u64",
        dtype_name(t));
  return Status::OK();
}

// ---- GatherND / ScatterND ----------------------------------------------------------------------

// The geometry both share: data [batch..., indexed..., slice...], indices [batch..., rows, k].
struct NdGeometry {
  int64_t batches = 1, rows = 1, k = 0, slice = 1;  // slice: elements per gathered piece
  std::vector<int64_t> dims;                        // data's indexed dims (k of them)
  std::vector<int64_t> strides;                     // their strides in slices
  int64_t data_batch = 1;                           // elements of data per batch
};

Result<NdGeometry> nd_geometry(BuildContext& ctx, int64_t batch_dims) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64}));
  const Shape& d = ctx.in_shape(0);
  const Shape& ix = ctx.in_shape(1);
  const int64_t r = static_cast<int64_t>(d.size()), q = static_cast<int64_t>(ix.size());
  if (q < 1 || batch_dims < 0 || batch_dims >= std::min(r, q))
    return ctx.error("batch_dims {} does not fit data {} and indices {}", batch_dims, shape_str(d),
                     shape_str(ix));
  NdGeometry g;
  g.k = ix.back();
  if (g.k < 1 || g.k > r - batch_dims)
    return ctx.error("indices' last dimension {} must be in [1, {}] for data {}", g.k,
                     r - batch_dims, shape_str(d));
  for (int64_t i = 0; i < batch_dims; ++i) {
    if (d[i] != ix[i])
      return ctx.error("the first {} dims of data {} and indices {} must agree", batch_dims,
                       shape_str(d), shape_str(ix));
    g.batches *= d[i];
  }
  for (int64_t i = batch_dims; i < q - 1; ++i) g.rows *= ix[i];
  for (int64_t i = batch_dims + g.k; i < r; ++i) g.slice *= d[i];
  g.dims.assign(d.begin() + batch_dims, d.begin() + batch_dims + g.k);
  g.strides.assign(static_cast<size_t>(g.k), 1);
  for (int64_t i = g.k - 2; i >= 0; --i) g.strides[i] = g.strides[i + 1] * g.dims[i + 1];
  g.data_batch = g.slice;
  for (int64_t v : g.dims) g.data_batch *= v;
  return g;
}

// The slice offset (in slices, within a batch) of index row `row`, or an error.
Result<int64_t> nd_offset(const NdGeometry& g, const int64_t* idx, const std::string& node) {
  int64_t off = 0;
  for (int64_t j = 0; j < g.k; ++j) {
    int64_t i = idx[j];
    if (!wrap_index(&i, g.dims[j]))
      return Status::Invalid("node '{}': index {} is out of range for a dimension of {}", node,
                             idx[j], g.dims[j]);
    off += i * g.strides[j];
  }
  return off;
}

Result<KernelPtr> build_gather_nd(BuildContext& ctx) {
  const int64_t batch_dims = ctx.attr_int("batch_dims", 0);
  NdGeometry g;
  DLSYS_ASSIGN_OR_RETURN(g, nd_geometry(ctx, batch_dims));
  const Shape& d = ctx.in_shape(0);
  const Shape& ix = ctx.in_shape(1);
  Shape y(ix.begin(), ix.end() - 1);
  y.insert(y.end(), d.begin() + batch_dims + g.k, d.end());
  const DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, y);
  const size_t es = dtype_size(t);
  std::string node = ctx.node_name();
  return make_kernel([g, es, node](const Tensor* const* in, Tensor* const* out) {
    const char* src = static_cast<const char*>(in[0]->data());
    const int64_t* idx = in[1]->data_as<int64_t>();
    char* dst = static_cast<char*>(out[0]->data());
    const size_t piece = static_cast<size_t>(g.slice) * es;
    for (int64_t b = 0; b < g.batches; ++b)
      for (int64_t r = 0; r < g.rows; ++r) {
        const int64_t row = b * g.rows + r;
        DLSYS_ASSIGN_OR_RETURN(int64_t off, nd_offset(g, idx + row * g.k, node));
        std::memcpy(dst + static_cast<size_t>(row) * piece,
                    src + (static_cast<size_t>(b * g.data_batch + off * g.slice)) * es, piece);
      }
    return Status::OK();
  });
}

Result<KernelPtr> build_scatter_nd(BuildContext& ctx) {
  NdGeometry g;
  DLSYS_ASSIGN_OR_RETURN(g, nd_geometry(ctx, 0));
  Reduction red;
  DLSYS_ASSIGN_OR_RETURN(red, read_reduction(ctx));
  const DType t = ctx.in_dtype(0);
  DLSYS_RETURN_IF_ERROR(check_reducible(ctx, red, t));
  if (ctx.in_dtype(2) != t) return ctx.error("updates must have the data's dtype");
  Shape want(ctx.in_shape(1).begin(), ctx.in_shape(1).end() - 1);
  want.insert(want.end(), ctx.in_shape(0).begin() + g.k, ctx.in_shape(0).end());
  if (ctx.in_shape(2) != want)
    return ctx.error("updates {} must be {}", shape_str(ctx.in_shape(2)), shape_str(want));
  ctx.set_output(0, t, ctx.in_shape(0));
  const size_t es = dtype_size(t);
  std::string node = ctx.node_name();
  return make_kernel([g, es, t, red, node](const Tensor* const* in, Tensor* const* out) {
    char* dst = static_cast<char*>(out[0]->data());
    std::memcpy(dst, in[0]->data(), in[0]->nbytes());
    const int64_t* idx = in[1]->data_as<int64_t>();
    const char* upd = static_cast<const char*>(in[2]->data());
    for (int64_t r = 0; r < g.rows; ++r) {
      DLSYS_ASSIGN_OR_RETURN(int64_t off, nd_offset(g, idx + r * g.k, node));
      place(t, dst + static_cast<size_t>(off * g.slice) * es,
            upd + static_cast<size_t>(r * g.slice) * es, g.slice, red);
    }
    return Status::OK();
  });
}

// ---- ScatterElements ---------------------------------------------------------------------------

Result<KernelPtr> build_scatter_elements(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64, DType::kI32}));
  const Shape& d = ctx.in_shape(0);
  const Shape& ix = ctx.in_shape(1);
  const int64_t r = static_cast<int64_t>(d.size());
  const int64_t axis = normalize_axis(ctx.attr_int("axis", 0), r);
  if (axis < 0)
    return ctx.error("axis {} is out of range for data {}", ctx.attr_int("axis", 0), shape_str(d));
  if (ix.size() != d.size() || ctx.in_shape(2) != ix)
    return ctx.error("indices {} and updates {} must have one shape, of data {}'s rank",
                     shape_str(ix), shape_str(ctx.in_shape(2)), shape_str(d));
  for (int64_t i = 0; i < r; ++i)
    if (i != axis && ix[i] > d[i])
      return ctx.error("indices {} exceed data {} outside the axis", shape_str(ix), shape_str(d));
  Reduction red;
  DLSYS_ASSIGN_OR_RETURN(red, read_reduction(ctx));
  const DType t = ctx.in_dtype(0);
  DLSYS_RETURN_IF_ERROR(check_reducible(ctx, red, t));
  if (ctx.in_dtype(2) != t) return ctx.error("updates must have the data's dtype");
  ctx.set_output(0, t, d);
  const size_t es = dtype_size(t);
  const std::vector<int64_t> ds = shape_strides(d), is = shape_strides(ix);
  std::string node = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    char* dst = static_cast<char*>(out[0]->data());
    std::memcpy(dst, in[0]->data(), in[0]->nbytes());
    const char* upd = static_cast<const char*>(in[2]->data());
    const int64_t n = in[1]->numel();
    for (int64_t p = 0; p < n; ++p) {
      int64_t q = 0, rest = p;
      for (int64_t a = 0; a < r; ++a) {
        const int64_t c = rest / is[a];
        rest %= is[a];
        if (a == axis) {
          int64_t i = index_at(*in[1], p);
          if (!wrap_index(&i, d[a]))
            return Status::Invalid("node '{}': index {} is out of range for axis {} of size {}",
                                   node, index_at(*in[1], p), axis, d[a]);
          q += i * ds[a];
        } else {
          q += c * ds[a];
        }
      }
      place(t, dst + static_cast<size_t>(q) * es, upd + static_cast<size_t>(p) * es, 1, red);
    }
    return Status::OK();
  });
}

// ---- TopK --------------------------------------------------------------------------------------

template <typename T>
void top_k(const T* x, int64_t outer, int64_t n, int64_t inner, int64_t k, bool largest, T* values,
           int64_t* indices, std::vector<int64_t>& order) {
  for (int64_t a = 0; a < outer; ++a)
    for (int64_t b = 0; b < inner; ++b) {
      const T* xs = x + a * n * inner + b;
      std::iota(order.begin(), order.end(), 0);
      // Ties: the lower index first (as ONNX Runtime and the reference sort).
      auto before = [&](int64_t i, int64_t j) {
        const T vi = xs[i * inner], vj = xs[j * inner];
        if (vi != vj) return largest ? vi > vj : vi < vj;
        return i < j;
      };
      std::partial_sort(order.begin(), order.begin() + k, order.end(), before);
      for (int64_t j = 0; j < k; ++j) {
        const int64_t o = (a * k + j) * inner + b;
        values[o] = xs[order[static_cast<size_t>(j)] * inner];
        indices[o] = order[static_cast<size_t>(j)];
      }
    }
}

Result<KernelPtr> build_top_k(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  std::vector<int64_t> kv;
  DLSYS_ASSIGN_OR_RETURN(kv, ctx.const_ints(1, "K"));
  const Shape& x = ctx.in_shape(0);
  const int64_t axis = normalize_axis(ctx.attr_int("axis", -1), static_cast<int64_t>(x.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for {}", ctx.attr_int("axis", -1), shape_str(x));
  if (kv.size() != 1 || kv[0] < 0 || kv[0] > x[static_cast<size_t>(axis)])
    return ctx.error("K must be one value in [0, {}]", x[static_cast<size_t>(axis)]);
  const int64_t k = kv[0];
  const bool largest = ctx.attr_int("largest", 1) != 0;
  Shape y = x;
  y[static_cast<size_t>(axis)] = k;
  const DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, y);
  ctx.set_output(1, DType::kI64, y);
  AxisSplit sp = split_at_axis(x, axis);
  auto order = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(sp.n));
  // Where the indices go when the node does not output them.
  auto unused = std::make_shared<std::vector<int64_t>>(
      ctx.output_used(1) ? 0 : static_cast<size_t>(sp.outer * k * sp.inner));
  return make_kernel(
      [sp, k, largest, t, order, unused](const Tensor* const* in, Tensor* const* out) {
        int64_t* idx = out[1] ? out[1]->data_as<int64_t>() : unused->data();
        DLSYS_DISPATCH_NUMERIC(t, T,
                               top_k(in[0]->data_as<T>(), sp.outer, sp.n, sp.inner, k, largest,
                                     out[0]->data_as<T>(), idx, *order));
        return Status::OK();
      });
}

// ---- OneHot ------------------------------------------------------------------------------------

Result<KernelPtr> build_one_hot(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(
      ctx.expect_dtype(0, {DType::kF32, DType::kF64, DType::kI8, DType::kU8, DType::kI16,
                           DType::kU16, DType::kI32, DType::kU32, DType::kI64, DType::kU64}));
  const Tensor* dv = ctx.in_value(1);
  if (!dv) return ctx.plan_time_value_missing(1, "depth");
  if (dv->numel() != 1) return ctx.error("depth (input 1) must be one value, got {}", dv->numel());
  const int64_t depth = static_cast<int64_t>(dv->get_f64(0));
  if (depth < 1) return ctx.error("depth must be positive, got {}", depth);
  if (shape_numel(ctx.in_shape(2)) != 2)
    return ctx.error("values must hold 2 elements [off, on], got {}", shape_str(ctx.in_shape(2)));
  const Shape& ix = ctx.in_shape(0);
  const int64_t rank = static_cast<int64_t>(ix.size()) + 1;
  const int64_t axis = normalize_axis(ctx.attr_int("axis", -1), rank);
  if (axis < 0)
    return ctx.error("axis {} is out of range for output rank {}", ctx.attr_int("axis", -1), rank);
  Shape y = ix;
  y.insert(y.begin() + axis, depth);
  const DType t = ctx.in_dtype(2);
  ctx.set_output(0, t, y);
  int64_t outer = 1, inner = 1;
  for (int64_t i = 0; i < axis; ++i) outer *= ix[static_cast<size_t>(i)];
  for (size_t i = static_cast<size_t>(axis); i < ix.size(); ++i) inner *= ix[i];
  const size_t es = dtype_size(t);
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const char* off = static_cast<const char*>(in[2]->data());
    const char* on = off + es;
    char* dst = static_cast<char*>(out[0]->data());
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t c = 0; c < depth; ++c)
        for (int64_t b = 0; b < inner; ++b) {
          auto v = static_cast<int64_t>(in[0]->get_f64(a * inner + b));
          if (v < 0) v += depth;
          std::memcpy(dst + static_cast<size_t>((a * depth + c) * inner + b) * es,
                      v == c ? on : off, es);
        }
    return Status::OK();
  });
}

// ---- Compress ----------------------------------------------------------------------------------

Result<KernelPtr> build_compress(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kBool}));
  const Shape& x = ctx.in_shape(0);
  const bool flat = !ctx.has_attr("axis");
  const int64_t axis =
      flat ? 0 : normalize_axis(ctx.attr_int("axis", 0), static_cast<int64_t>(x.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for {}", ctx.attr_int("axis", 0), shape_str(x));
  const Shape xs = flat ? Shape{shape_numel(x)} : x;
  const AxisSplit sp = split_at_axis(xs, axis);
  if (shape_numel(ctx.in_shape(1)) > sp.n)
    return ctx.error("condition has {} values for an axis of {}", shape_numel(ctx.in_shape(1)),
                     sp.n);
  const DType t = ctx.in_dtype(0);
  const size_t piece = static_cast<size_t>(sp.inner) * dtype_size(t);
  auto kept_of = [](const Tensor& cond) {
    std::vector<int64_t> kept;
    for (int64_t i = 0; i < cond.numel(); ++i)
      if (cond.data_as<uint8_t>()[i]) kept.push_back(i);
    return kept;
  };
  // The slices of x along the axis whose condition is true, into y.
  auto gather = [sp, piece](const Tensor& x, const std::vector<int64_t>& kept, Tensor* y) {
    const char* src = static_cast<const char*>(x.data());
    char* dst = static_cast<char*>(y->data());
    for (int64_t a = 0; a < sp.outer; ++a)
      for (size_t j = 0; j < kept.size(); ++j)
        std::memcpy(dst + (static_cast<size_t>(a) * kept.size() + j) * piece,
                    src + static_cast<size_t>(a * sp.n + kept[j]) * piece, piece);
  };
  if (const Tensor* cond = ctx.in_value(1)) {
    std::vector<int64_t> kept = kept_of(*cond);
    Shape y = xs;
    y[static_cast<size_t>(axis)] = static_cast<int64_t>(kept.size());
    ctx.set_output(0, t, y);
    return make_kernel([gather, kept](const Tensor* const* in, Tensor* const* out) {
      gather(*in[0], kept, out[0]);
      return Status::OK();
    });
  }
  // The condition is computed while running: so is the output's length.
  ctx.set_output_dynamic(0, t);
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    std::vector<int64_t> kept = kept_of(*in[1]);
    Shape y = xs;
    y[static_cast<size_t>(axis)] = static_cast<int64_t>(kept.size());
    *out[0] = Tensor::empty(t, y);
    gather(*in[0], kept, out[0]);
    return Status::OK();
  });
}

// ---- EyeLike -----------------------------------------------------------------------------------

Result<KernelPtr> build_eye_like(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  if (x.size() != 2) return ctx.error("input {} must be 2-D", shape_str(x));
  DType t = ctx.in_dtype(0);
  if (ctx.has_attr("dtype")) {
    auto d = dtype_from_onnx(static_cast<int>(ctx.attr_int("dtype", 1)));
    if (!d.ok()) return ctx.unsupported("dtype: {}", d.status().message());
    t = d.value();
  }
  const int64_t k = ctx.attr_int("k", 0);
  Tensor eye = Tensor::zeros(t, x);
  for (int64_t i = 0; i < x[0]; ++i) {
    const int64_t j = i + k;
    if (j < 0 || j >= x[1]) continue;
    const int64_t at = i * x[1] + j;
    switch (t) {
      case DType::kF16:
        eye.data_as<uint16_t>()[at] = 0x3C00;  // 1.0 in half precision
        break;
      case DType::kBF16:
        eye.data_as<uint16_t>()[at] = 0x3F80;  // 1.0 in bfloat16
        break;
      case DType::kBool:
        eye.data_as<uint8_t>()[at] = 1;
        break;
      default:
        DLSYS_DISPATCH_NUMERIC(t, T, eye.data_as<T>()[at] = T(1));
        break;
    }
  }
  ctx.set_output(0, t, x);
  ctx.set_output_value(0, std::move(eye));
  return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
}

// ---- ReverseSequence ---------------------------------------------------------------------------

Result<KernelPtr> build_reverse_sequence(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64}));
  const Shape& x = ctx.in_shape(0);
  const int64_t time = ctx.attr_int("time_axis", 0), batch = ctx.attr_int("batch_axis", 1);
  if (x.size() < 2 || !((time == 0 && batch == 1) || (time == 1 && batch == 0)))
    return ctx.error(
        "time_axis {} and batch_axis {} must be 0 and 1 (either way) of a rank >= 2 "
        "input, got {}",
        time, batch, shape_str(x));
  if (ctx.in_shape(1) != Shape{x[static_cast<size_t>(batch)]})
    return ctx.error("sequence_lens {} must be [{}]", shape_str(ctx.in_shape(1)),
                     x[static_cast<size_t>(batch)]);
  const DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, x);
  const int64_t T = x[static_cast<size_t>(time)], B = x[static_cast<size_t>(batch)];
  int64_t inner = 1;
  for (size_t i = 2; i < x.size(); ++i) inner *= x[i];
  const size_t piece = static_cast<size_t>(inner) * dtype_size(t);
  std::string node = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    const char* src = static_cast<const char*>(in[0]->data());
    char* dst = static_cast<char*>(out[0]->data());
    const int64_t* lens = in[1]->data_as<int64_t>();
    auto at = [&](int64_t ti, int64_t bi) {
      return static_cast<size_t>(time == 0 ? ti * B + bi : bi * T + ti) * piece;
    };
    for (int64_t b = 0; b < B; ++b) {
      if (lens[b] < 0 || lens[b] > T)
        return Status::Invalid("node '{}': sequence_lens[{}] is {}; it must be in [0, {}]", node, b,
                               lens[b], T);
      for (int64_t ti = 0; ti < T; ++ti) {
        const int64_t from = ti < lens[b] ? lens[b] - 1 - ti : ti;
        std::memcpy(dst + at(ti, b), src + at(from, b), piece);
      }
    }
    return Status::OK();
  });
}

}  // namespace

void register_index_ops(OpRegistry& r) {
  r.add("GatherND", 2, 2, 1, 1, build_gather_nd);
  r.add("ScatterND", 3, 3, 1, 1, build_scatter_nd);
  r.add("ScatterElements", 3, 3, 1, 1, build_scatter_elements);
  r.add("TopK", 2, 2, 2, 2, build_top_k);
  r.add("OneHot", 3, 3, 1, 1, build_one_hot);
  r.add("Compress", 2, 2, 1, 1, build_compress);
  r.add("EyeLike", 1, 1, 1, 1, build_eye_like);
  r.add("ReverseSequence", 2, 2, 1, 1, build_reverse_sequence);
}

}  // namespace dlsys
