// Data-movement ops: Transpose (oneDNN reorder with permuted strides; a plain loop for the dtypes
// oneDNN lacks), Concat, Split, Slice, Gather, Tile; SliceGrad and GatherGrad for training graphs.
#include <cstring>

#include "ops/dispatch.h"
#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

// Copies an affine view: out element (i_0..i_n) <- src[base + sum i_d * sst[d]] (elements).
template <typename T>
void strided_copy(const T* src, T* dst, const Shape& out, const std::vector<int64_t>& sst,
                  int64_t base) {
  int64_t rank = static_cast<int64_t>(out.size());
  int64_t total = shape_numel(out);
  if (total == 0) return;
  int64_t inner = rank ? out[rank - 1] : 1;
  int64_t is = rank ? sst[rank - 1] : 0;
  int64_t rows = total / inner;
#pragma omp parallel for if (total > 65536)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rem = r, off = base;
    for (int64_t d = rank - 2; d >= 0; --d) {
      off += (rem % out[d]) * sst[d];
      rem /= out[d];
    }
    T* y = dst + r * inner;
    if (is == 1) {
      std::memcpy(y, src + off, inner * sizeof(T));
    } else {
      for (int64_t j = 0; j < inner; ++j) y[j] = src[off + j * is];
    }
  }
}

Result<KernelPtr> build_transpose(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  std::vector<int64_t> perm = ctx.attr_ints("perm");
  if (perm.empty())
    for (int64_t i = r - 1; i >= 0; --i) perm.push_back(i);
  if (static_cast<int64_t>(perm.size()) != r)
    return ctx.error("perm has {} entries for rank {}", perm.size(), r);
  std::vector<bool> seen(r, false);
  for (auto& p : perm) {
    p = normalize_axis(p, r);
    if (p < 0 || seen[p])
      return ctx.error("perm {} is not a permutation of 0..{}", shape_str(ctx.attr_ints("perm")),
                       r - 1);
    seen[p] = true;
  }
  Shape out(r);
  std::vector<int64_t> ist = shape_strides(x), sst(r);
  for (int64_t i = 0; i < r; ++i) {
    out[i] = x[perm[i]];
    sst[i] = ist[perm[i]];
  }
  DType t = ctx.in_dtype(0);
  // Every consumer takes a oneDNN layout (the convolution after an NHWC exporter's Transpose):
  // the output is the input's own bytes seen through permuted strides, no copy; each consumer's
  // conversion to its layout reads them so (one reorder where there were a transpose and a
  // reorder). Only for a value computed while running: a constant's bytes are its plain order.
  if (dnnl_has(t) && r > 0 && shape_numel(out) > 0 && !ctx.in_value(0) &&
      ctx.in_layout(0).is_zero() && ctx.output_layout_free(0)) {
    try {
      dnnl::memory::desc view = strided_md(out, t, sst);
      ctx.alias_output(0, 0, out);
      ctx.set_output_layout(0, view);
      return KernelPtr();
    } catch (const dnnl::error&) {
      // Not a layout oneDNN describes: copy as below.
    }
  }
  ctx.set_output(0, t, out);
  if (dnnl_has(t) && r > 0 && shape_numel(out) > 0) {
    auto reo = std::make_shared<DnnlReorder>();
    bool ok = true;
    try {
      reo->init(strided_md(out, t, sst), plain_md(out, t));
    } catch (const dnnl::error&) {
      ok = false;
    }
    if (ok)
      return make_kernel([reo](const Tensor* const* in, Tensor* const* o) {
        reo->run(in[0]->data(), o[0]->data());
        return Status::OK();
      });
  }
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, strided_copy(in[0]->data_as<T>(), o[0]->data_as<T>(), out, sst, 0));
    return Status::OK();
  });
}

Result<KernelPtr> build_concat(BuildContext& ctx) {
  const Shape& x0 = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x0.size());
  int64_t axis = normalize_axis(ctx.attr_int("axis", 0), r);
  if (axis < 0) return ctx.error("axis {} is out of range for rank {}", ctx.attr_int("axis", 0), r);
  DType t = ctx.in_dtype(0);
  Shape out = x0;
  out[axis] = 0;
  size_t n = ctx.num_inputs();
  for (size_t i = 0; i < n; ++i) {
    const Shape& s = ctx.in_shape(i);
    if (ctx.in_dtype(i) != t)
      return ctx.error("input {} has dtype {}, input 0 has {}", i, dtype_name(ctx.in_dtype(i)),
                       dtype_name(t));
    if (static_cast<int64_t>(s.size()) != r)
      return ctx.error("input {} has rank {}, input 0 has {}", i, s.size(), r);
    for (int64_t d = 0; d < r; ++d)
      if (d != axis && s[d] != x0[d])
        return ctx.error("input {} has shape {}, which differs from input 0 {} outside axis {}", i,
                         shape_str(s), shape_str(x0), axis);
    out[axis] += s[axis];
  }
  ctx.set_output(0, t, out);
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= out[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= out[d];
  size_t es = dtype_size(t);
  std::vector<int64_t> chunk(n);
  for (size_t i = 0; i < n; ++i)
    chunk[i] = ctx.in_shape(i)[axis] * inner * static_cast<int64_t>(es);
  int64_t row = out[axis] * inner * static_cast<int64_t>(es);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    char* y = static_cast<char*>(o[0]->data());
    for (int64_t a = 0; a < outer; ++a) {
      int64_t off = a * row;
      for (size_t i = 0; i < n; ++i) {
        if (chunk[i])
          std::memcpy(y + off, static_cast<const char*>(in[i]->data()) + a * chunk[i], chunk[i]);
        off += chunk[i];
      }
    }
    return Status::OK();
  });
}

Result<KernelPtr> build_split(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  int64_t axis = normalize_axis(ctx.attr_int("axis", 0), r);
  if (axis < 0)
    return ctx.error("axis {} is out of range for input {}", ctx.attr_int("axis", 0), shape_str(x));
  size_t n = ctx.num_outputs();
  std::vector<int64_t> split;
  if (ctx.has_input(1)) {
    DLSYS_ASSIGN_OR_RETURN(split, ctx.const_ints(1, "split"));
    if (split.size() != n) return ctx.error("split has {} entries for {} outputs", split.size(), n);
    int64_t sum = 0;
    for (int64_t s : split) sum += s;
    if (sum != x[axis])
      return ctx.error("split sums to {} but axis {} has size {}", sum, axis, x[axis]);
  } else if (ctx.has_attr("split")) {
    split = ctx.attr_ints("split");
  } else {
    int64_t each = (x[axis] + static_cast<int64_t>(n) - 1) / static_cast<int64_t>(n);
    for (size_t i = 0; i < n; ++i)
      split.push_back(std::min(each, x[axis] - each * static_cast<int64_t>(i)));
  }
  DType t = ctx.in_dtype(0);
  for (size_t i = 0; i < n; ++i) {
    Shape s = x;
    s[axis] = split[i];
    ctx.set_output(i, t, s);
  }
  int64_t outer = 1, inner = 1;
  for (int64_t d = 0; d < axis; ++d) outer *= x[d];
  for (int64_t d = axis + 1; d < r; ++d) inner *= x[d];
  int64_t es = static_cast<int64_t>(dtype_size(t));
  int64_t row = x[axis] * inner * es;
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const char* src = static_cast<const char*>(in[0]->data());
    int64_t off = 0;
    for (size_t i = 0; i < n; ++i) {
      int64_t c = split[i] * inner * es;
      if (o[i] && c)
        for (int64_t a = 0; a < outer; ++a)
          std::memcpy(static_cast<char*>(o[i]->data()) + a * c, src + a * row + off, c);
      off += c;
    }
    return Status::OK();
  });
}

// Slice's view of X: the output shape, and per dimension the first index and the step.
// `first` is the input index of `starts` (1 for Slice, 2 for SliceGrad).
Status slice_geometry(const BuildContext& ctx, size_t first, const Shape& x, Shape* out_shape,
                      std::vector<int64_t>* begin_out, std::vector<int64_t>* step_out) {
  int64_t r = static_cast<int64_t>(x.size());
  std::vector<int64_t> starts, ends, axes, steps;
  DLSYS_ASSIGN_OR_RETURN(starts, ctx.const_ints(first, "starts"));
  DLSYS_ASSIGN_OR_RETURN(ends, ctx.const_ints(first + 1, "ends"));
  if (ctx.has_input(first + 2)) {
    DLSYS_ASSIGN_OR_RETURN(axes, ctx.const_ints(first + 2, "axes"));
  } else {
    for (size_t i = 0; i < starts.size(); ++i) axes.push_back(static_cast<int64_t>(i));
  }
  if (ctx.has_input(first + 3)) {
    DLSYS_ASSIGN_OR_RETURN(steps, ctx.const_ints(first + 3, "steps"));
  } else {
    steps.assign(starts.size(), 1);
  }
  if (ends.size() != starts.size() || axes.size() != starts.size() || steps.size() != starts.size())
    return ctx.error("starts, ends, axes and steps must have the same length");
  Shape out = x;
  std::vector<int64_t> begin(r, 0), step(r, 1);
  std::vector<bool> seen(r, false);
  for (size_t i = 0; i < starts.size(); ++i) {
    int64_t a = normalize_axis(axes[i], r);
    if (a < 0 || seen[a])
      return ctx.error("axis {} is out of range or repeated for input {}", axes[i], shape_str(x));
    seen[a] = true;
    int64_t d = x[a], s = steps[i];
    if (s == 0) return ctx.error("steps must not be zero");
    int64_t st = starts[i], en = ends[i];
    if (st < 0) st += d;
    if (en < 0) en += d;
    int64_t cnt;
    if (s > 0) {
      st = std::clamp<int64_t>(st, 0, d);
      en = std::clamp<int64_t>(en, 0, d);
      cnt = en > st ? (en - st + s - 1) / s : 0;
    } else {
      st = std::clamp<int64_t>(st, 0, d - 1);
      en = std::clamp<int64_t>(en, -1, d - 1);
      cnt = st > en ? (st - en + (-s) - 1) / (-s) : 0;
    }
    out[a] = cnt;
    begin[a] = st;
    step[a] = s;
  }
  *out_shape = out;
  *begin_out = begin;
  *step_out = step;
  return Status::OK();
}

Result<KernelPtr> build_slice(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  Shape out;
  std::vector<int64_t> begin, step;
  DLSYS_RETURN_IF_ERROR(slice_geometry(ctx, 1, x, &out, &begin, &step));
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, out);
  std::vector<int64_t> ist = shape_strides(x), sst(r);
  int64_t base = 0;
  for (int64_t d = 0; d < r; ++d) {
    sst[d] = ist[d] * step[d];
    base += begin[d] * ist[d];
  }
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T,
                         strided_copy(in[0]->data_as<T>(), o[0]->data_as<T>(), out, sst, base));
    return Status::OK();
  });
}

// Gather's geometry over data `x` and indices `idx` (attribute axis): the output shape and X viewed
// as [outer, n, inner] around the axis. Shared by Gather and GatherGrad.
struct GatherGeometry {
  Shape out;
  int64_t axis = 0, outer = 1, n = 0, inner = 1;
};

Status gather_geometry(const BuildContext& ctx, const Shape& x, const Shape& idx,
                       GatherGeometry* g) {
  int64_t r = static_cast<int64_t>(x.size());
  g->axis = normalize_axis(ctx.attr_int("axis", 0), r);
  if (g->axis < 0)
    return ctx.error("axis {} is out of range for data {}", ctx.attr_int("axis", 0), shape_str(x));
  g->out.assign(x.begin(), x.begin() + g->axis);
  g->out.insert(g->out.end(), idx.begin(), idx.end());
  g->out.insert(g->out.end(), x.begin() + g->axis + 1, x.end());
  g->n = x[g->axis];
  for (int64_t d = 0; d < g->axis; ++d) g->outer *= x[d];
  for (int64_t d = g->axis + 1; d < r; ++d) g->inner *= x[d];
  return Status::OK();
}

Result<KernelPtr> build_gather(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64, DType::kI32}));
  const Shape &x = ctx.in_shape(0), &idx = ctx.in_shape(1);
  GatherGeometry geo;
  DLSYS_RETURN_IF_ERROR(gather_geometry(ctx, x, idx, &geo));
  const Shape& out = geo.out;
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, out);
  int64_t outer = geo.outer, inner = geo.inner, n = geo.n, ni = shape_numel(idx);
  int64_t es = static_cast<int64_t>(dtype_size(t));
  std::string name = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const char* src = static_cast<const char*>(in[0]->data());
    char* dst = static_cast<char*>(o[0]->data());
    for (int64_t k = 0; k < ni; ++k) {
      int64_t j = in[1]->get_i64(k);
      if (j < 0) j += n;
      if (j < 0 || j >= n)
        return Status::Invalid("node '{}' (Gather): index {} is out of range for axis of size {}",
                               name, in[1]->get_i64(k), n);
    }
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t k = 0; k < ni; ++k) {
        int64_t j = in[1]->get_i64(k);
        if (j < 0) j += n;
        std::memcpy(dst + (a * ni + k) * inner * es, src + (a * n + j) * inner * es, inner * es);
      }
    return Status::OK();
  });
}

// SliceGrad(dY, X, starts, ends, axes?, steps?) -> dX: the gradient of Slice (training graphs,
// src/train/autodiff): zeros of X's shape with dY written into the sliced positions.
Result<KernelPtr> build_slice_grad(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(1);
  int64_t r = static_cast<int64_t>(x.size());
  Shape out;
  std::vector<int64_t> begin, step;
  DLSYS_RETURN_IF_ERROR(slice_geometry(ctx, 2, x, &out, &begin, &step));
  if (ctx.in_shape(0) != out)
    return ctx.error("dY has shape {}, but the slice of X {} has {}", shape_str(ctx.in_shape(0)),
                     shape_str(x), shape_str(out));
  ctx.set_output(0, DType::kF32, x);
  std::vector<int64_t> ist = shape_strides(x), sst(r);
  int64_t base = 0;
  for (int64_t d = 0; d < r; ++d) {
    sst[d] = ist[d] * step[d];
    base += begin[d] * ist[d];
  }
  int64_t total = shape_numel(out), xn = shape_numel(x);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* dy = in[0]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    std::fill_n(dx, xn, 0.f);
    for (int64_t i = 0; i < total; ++i) {
      int64_t rem = i, off = base;
      for (int64_t d = r - 1; d >= 0; --d) {
        off += (rem % out[d]) * sst[d];
        rem /= out[d];
      }
      dx[off] = dy[i];
    }
    return Status::OK();
  });
}

// GatherGrad(dY, indices, X) -> dX: the gradient of Gather (an embedding's lookup): zeros of X's
// shape with each dY row added into the row its index picked (repeated indices add up).
Result<KernelPtr> build_gather_grad(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64, DType::kI32}));
  const Shape &x = ctx.in_shape(2), &idx = ctx.in_shape(1);
  GatherGeometry geo;
  DLSYS_RETURN_IF_ERROR(gather_geometry(ctx, x, idx, &geo));
  if (ctx.in_shape(0) != geo.out)
    return ctx.error("dY has shape {}, but Gather gives {}", shape_str(ctx.in_shape(0)),
                     shape_str(geo.out));
  ctx.set_output(0, DType::kF32, x);
  int64_t outer = geo.outer, inner = geo.inner, n = geo.n, ni = shape_numel(idx),
          xn = shape_numel(x);
  std::string name = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* dy = in[0]->data_as<float>();
    float* dx = o[0]->data_as<float>();
    std::fill_n(dx, xn, 0.f);
    for (int64_t a = 0; a < outer; ++a)
      for (int64_t k = 0; k < ni; ++k) {
        int64_t j = in[1]->get_i64(k);
        if (j < 0) j += n;
        if (j < 0 || j >= n)
          return Status::Invalid(
              "node '{}' (GatherGrad): index {} is out of range for axis of "
              "size {}",
              name, in[1]->get_i64(k), n);
        const float* src = dy + (a * ni + k) * inner;
        float* dst = dx + (a * n + j) * inner;
        for (int64_t e = 0; e < inner; ++e) dst[e] += src[e];
      }
    return Status::OK();
  });
}

Result<KernelPtr> build_tile(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  std::vector<int64_t> rep;
  DLSYS_ASSIGN_OR_RETURN(rep, ctx.const_ints(1, "repeats"));
  if (rep.size() != x.size())
    return ctx.error("repeats has {} entries for input rank {}", rep.size(), x.size());
  Shape out(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    if (rep[i] < 0) return ctx.error("repeats must be >= 0");
    out[i] = x[i] * rep[i];
  }
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, out);
  std::vector<int64_t> ist = shape_strides(x), ost = shape_strides(out);
  int64_t total = shape_numel(out), rank = static_cast<int64_t>(out.size());
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* src = in[0]->data_as<T>();
      T* dst = o[0]->data_as<T>();
      for (int64_t i = 0; i < total; ++i) {
        int64_t rem = i, off = 0;
        for (int64_t d = 0; d < rank; ++d) {
          off += ((rem / ost[d]) % x[d]) * ist[d];
          rem %= ost[d];
        }
        dst[i] = src[off];
      }
    });
    return Status::OK();
  });
}

// Copies `x` seen as `view` (row-major) and permuted by `perm` into a dense output.
KernelPtr permuted_copy_kernel(DType t, const Shape& view, const std::vector<int64_t>& perm) {
  std::vector<int64_t> vst = shape_strides(view), sst(perm.size());
  Shape out(perm.size());
  for (size_t i = 0; i < perm.size(); ++i) {
    out[i] = view[perm[i]];
    sst[i] = vst[perm[i]];
  }
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, strided_copy(in[0]->data_as<T>(), o[0]->data_as<T>(), out, sst, 0));
    return Status::OK();
  });
}

Result<KernelPtr> build_depth_space(BuildContext& ctx, bool to_space) {
  const Shape& x = ctx.in_shape(0);
  if (x.size() != 4) return ctx.error("input must be 4-D [N, C, H, W], got {}", shape_str(x));
  int64_t b = ctx.attr_int("blocksize", 0);
  if (b < 1) return ctx.error("blocksize must be >= 1");
  int64_t N = x[0], C = x[1], H = x[2], W = x[3];
  DType t = ctx.in_dtype(0);
  if (to_space) {
    if (C % (b * b) != 0)
      return ctx.error("channels {} are not divisible by blocksize^2 = {}", C, b * b);
    ctx.set_output(0, t, {N, C / (b * b), H * b, W * b});
    if (ctx.attr_string("mode", "DCR") == "CRD")
      return permuted_copy_kernel(t, {N, C / (b * b), b, b, H, W}, {0, 1, 4, 2, 5, 3});
    return permuted_copy_kernel(t, {N, b, b, C / (b * b), H, W}, {0, 3, 4, 1, 5, 2});
  }
  if (H % b != 0 || W % b != 0)
    return ctx.error("H {} and W {} must be divisible by blocksize {}", H, W, b);
  ctx.set_output(0, t, {N, C * b * b, H / b, W / b});
  return permuted_copy_kernel(t, {N, C, H / b, b, W / b, b}, {0, 3, 5, 1, 2, 4});
}

Result<KernelPtr> build_trilu(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 2) return ctx.error("input must have rank >= 2, got {}", shape_str(x));
  int64_t k = 0;
  if (ctx.has_input(1)) {
    std::vector<int64_t> kv;
    DLSYS_ASSIGN_OR_RETURN(kv, ctx.const_ints(1, "k"));
    if (kv.size() != 1) return ctx.error("k must be a scalar");
    k = kv[0];
  }
  bool upper = ctx.attr_int("upper", 1) != 0;
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, x);
  int64_t R = x[x.size() - 2], Cc = x.back(), mats = shape_numel(x) / std::max<int64_t>(R * Cc, 1);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* X = in[0]->data_as<T>();
      T* Y = o[0]->data_as<T>();
      for (int64_t m = 0; m < mats; ++m)
        for (int64_t i = 0; i < R; ++i)
          for (int64_t j = 0; j < Cc; ++j) {
            int64_t idx = (m * R + i) * Cc + j;
            bool keep = upper ? (j - i >= k) : (j - i <= k);
            Y[idx] = keep ? X[idx] : T(0);
          }
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_gather_elements(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(1, {DType::kI64, DType::kI32}));
  const Shape &x = ctx.in_shape(0), &idx = ctx.in_shape(1);
  int64_t r = static_cast<int64_t>(x.size());
  if (static_cast<int64_t>(idx.size()) != r)
    return ctx.error("indices rank {} differs from data rank {}", idx.size(), r);
  int64_t axis = normalize_axis(ctx.attr_int("axis", 0), r);
  if (axis < 0)
    return ctx.error("axis {} is out of range for data {}", ctx.attr_int("axis", 0), shape_str(x));
  DType t = ctx.in_dtype(0);
  ctx.set_output(0, t, idx);
  std::vector<int64_t> xst = shape_strides(x), ist = shape_strides(idx);
  int64_t total = shape_numel(idx), n = x[axis];
  std::string name = ctx.node_name();
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* X = in[0]->data_as<T>();
      T* Y = o[0]->data_as<T>();
      for (int64_t i = 0; i < total; ++i) {
        int64_t j = in[1]->get_i64(i);
        if (j < 0) j += n;
        if (j < 0 || j >= n)
          return Status::Invalid(
              "node '{}' (GatherElements): index {} is out of range for axis of size {}", name,
              in[1]->get_i64(i), n);
        int64_t rem = i, off = 0;
        for (int64_t d = 0; d < r; ++d) {
          int64_t c = rem / ist[d];
          rem %= ist[d];
          off += (d == axis ? j : c) * xst[d];
        }
        Y[i] = X[off];
      }
    });
    return Status::OK();
  });
}

Result<KernelPtr> build_pad(BuildContext& ctx) {
  const Shape& x = ctx.in_shape(0);
  int64_t r = static_cast<int64_t>(x.size());
  std::vector<int64_t> pads;
  DLSYS_ASSIGN_OR_RETURN(pads, ctx.const_ints(1, "pads"));
  if (static_cast<int64_t>(pads.size()) != 2 * r)
    return ctx.error("pads has {} values for rank {} (needs {})", pads.size(), r, 2 * r);
  std::string mode = ctx.attr_string("mode", "constant");
  if (mode != "constant" && mode != "reflect" && mode != "edge")
    return ctx.error("mode '{}' is not one of constant, reflect, edge", mode);
  DType t = ctx.in_dtype(0);
  Shape out(r);
  for (int64_t d = 0; d < r; ++d) {
    out[d] = x[d] + pads[d] + pads[r + d];
    if (out[d] < 0) return ctx.error("pads {} make dimension {} negative", shape_str(pads), d);
    if (mode != "constant" && x[d] == 0 && out[d] > 0)
      return ctx.error("cannot {}-pad an empty dimension", mode);
    if (mode == "reflect" && (pads[d] >= x[d] || pads[r + d] >= x[d]) &&
        (pads[d] > 0 || pads[r + d] > 0))
      return ctx.error("reflect padding must be smaller than the dimension ({} vs {})",
                       std::max(pads[d], pads[r + d]), x[d]);
  }
  ctx.set_output(0, t, out);
  enum {
    kConstant,
    kReflect,
    kEdge
  } m = mode == "constant"  ? kConstant
        : mode == "reflect" ? kReflect
                            : kEdge;
  bool has_value = ctx.has_input(2);
  std::vector<int64_t> xst = shape_strides(x), ost = shape_strides(out);
  int64_t total = shape_numel(out);
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    DLSYS_DISPATCH_BYTES(t, T, {
      const T* X = in[0]->data_as<T>();
      T* Y = o[0]->data_as<T>();
      T fill{};
      if (has_value && in[2]->numel() > 0) fill = in[2]->data_as<T>()[0];
      for (int64_t i = 0; i < total; ++i) {
        int64_t rem = i, off = 0;
        bool outside = false;
        for (int64_t d = 0; d < r; ++d) {
          int64_t c = rem / ost[d] - pads[d];
          rem %= ost[d];
          if (c < 0 || c >= x[d]) {
            if (m == kConstant) {
              outside = true;
              break;
            }
            if (m == kEdge)
              c = c < 0 ? 0 : x[d] - 1;
            else
              c = c < 0 ? -c : 2 * (x[d] - 1) - c;
          }
          off += c * xst[d];
        }
        Y[i] = outside ? fill : X[off];
      }
    });
    return Status::OK();
  });
}

}  // namespace

void register_tensor_ops(OpRegistry& r) {
  r.add("Transpose", 1, 1, 1, 1, build_transpose);
  r.add("Concat", 1, 1024, 1, 1, build_concat);
  r.add("Split", 1, 2, 1, 1024, build_split);
  r.add("Slice", 3, 5, 1, 1, build_slice);
  r.add("Gather", 2, 2, 1, 1, build_gather);
  r.add("SliceGrad", 4, 6, 1, 1, build_slice_grad);
  r.add("GatherGrad", 3, 3, 1, 1, build_gather_grad);
  r.add("Tile", 2, 2, 1, 1, build_tile);
  r.add("DepthToSpace", 1, 1, 1, 1, [](BuildContext& c) { return build_depth_space(c, true); });
  r.add("SpaceToDepth", 1, 1, 1, 1, [](BuildContext& c) { return build_depth_space(c, false); });
  r.add("Trilu", 1, 2, 1, 1, build_trilu);
  r.add("GatherElements", 2, 2, 1, 1, build_gather_elements);
  r.add("Pad", 2, 3, 1, 1, build_pad);
}

}  // namespace dlsys
