// Ops whose output shape is a function of their input's values: NonZero and Unique.
//
// Given an input known at plan time (a constant, a function of constants and shapes, or a small
// graph input the plan is specialized on) they compute their outputs then, as constants. Given
// one known only at run time their outputs are dynamic (BuildContext::set_output_dynamic): the
// kernel computes them into tensors it allocates per run, and the planner plans what reads them
// once their shapes are known (graph/plan.h, "Run-time shapes").
#include <algorithm>
#include <map>
#include <numeric>

#include "ops/op_registry.h"

namespace dlsys {
namespace {

KernelPtr no_kernel() {
  return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
}

// ---- NonZero -----------------------------------------------------------------------------------

// The indices of x's non-zero elements, [max(rank, 1), count].
Tensor non_zero(const Tensor* x) {
  const Shape& s = x->shape();
  const int64_t rank = static_cast<int64_t>(s.size());
  const std::vector<int64_t> st = shape_strides(s);
  std::vector<int64_t> hits;
  for (int64_t i = 0; i < x->numel(); ++i)
    if (x->get_f64(i) != 0) hits.push_back(i);
  const int64_t n = static_cast<int64_t>(hits.size());
  // A scalar has rank 0: ONNX gives [1, n] (numpy's nonzero of a 0-d array works as 1-d).
  const int64_t rows = std::max<int64_t>(rank, 1);
  std::vector<int64_t> y(static_cast<size_t>(rows * n));
  for (int64_t j = 0; j < n; ++j) {
    int64_t rest = hits[j];
    if (rank == 0) y[j] = 0;
    for (int64_t d = 0; d < rank; ++d) {
      y[d * n + j] = rest / st[d];
      rest %= st[d];
    }
  }
  return Tensor::from_i64({rows, n}, y.data());
}

Result<KernelPtr> build_non_zero(BuildContext& ctx) {
  if (const Tensor* x = ctx.in_value(0)) {
    ctx.set_output_value(0, non_zero(x));
    return no_kernel();
  }
  ctx.set_output_dynamic(0, DType::kI64);
  return make_kernel([](const Tensor* const* in, Tensor* const* out) {
    *out[0] = non_zero(in[0]);
    return Status::OK();
  });
}

// ---- Unique ------------------------------------------------------------------------------------

// Unique's four outputs for x (flattened when `flat`, else slices along `axis`).
void unique(const Tensor* x, bool flat, int64_t axis, bool sorted, Tensor* const* outs) {
  const DType t = x->dtype();
  const Shape& s = x->shape();
  const Shape xs = flat ? Shape{shape_numel(s)} : s;
  const AxisSplit sp = split_at_axis(xs, axis);
  // Slice j: the elements x[o, j, i] in (o, i) order, as numpy.unique(axis=...) compares them.
  auto at = [&](int64_t j, int64_t k) {
    return x->get_f64((k / sp.inner * sp.n + j) * sp.inner + k % sp.inner);
  };
  const int64_t len = sp.outer * sp.inner;
  auto less = [&](int64_t a, int64_t b) {
    for (int64_t k = 0; k < len; ++k) {
      const double va = at(a, k), vb = at(b, k);
      if (va != vb) return va < vb;
    }
    return false;
  };
  auto same = [&](int64_t a, int64_t b) { return !less(a, b) && !less(b, a); };
  // First occurrences, in input order; each slice's unique number.
  std::vector<int64_t> first, inverse(static_cast<size_t>(sp.n)), counts;
  for (int64_t j = 0; j < sp.n; ++j) {
    int64_t u = 0;
    while (u < static_cast<int64_t>(first.size()) && !same(first[u], j)) ++u;
    if (u == static_cast<int64_t>(first.size())) {
      first.push_back(j);
      counts.push_back(0);
    }
    inverse[j] = u;
    ++counts[u];
  }
  const int64_t U = static_cast<int64_t>(first.size());
  std::vector<int64_t> order(static_cast<size_t>(U));  // output position -> unique number
  std::iota(order.begin(), order.end(), 0);
  if (sorted)
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return less(first[a], first[b]); });
  std::vector<int64_t> rank(static_cast<size_t>(U));
  for (int64_t p = 0; p < U; ++p) rank[order[p]] = p;
  std::vector<int64_t> indices(static_cast<size_t>(U)), cnt(static_cast<size_t>(U));
  for (int64_t p = 0; p < U; ++p) indices[p] = first[order[p]], cnt[p] = counts[order[p]];
  for (int64_t& v : inverse) v = rank[v];
  Shape ys = xs;
  ys[static_cast<size_t>(axis)] = U;
  Tensor y = Tensor::empty(t, ys);
  const size_t es = dtype_size(t);
  const char* src = static_cast<const char*>(x->data());
  char* dst = static_cast<char*>(y.data());
  for (int64_t o = 0; o < sp.outer; ++o)
    for (int64_t p = 0; p < U; ++p)
      std::copy_n(src + static_cast<size_t>((o * sp.n + indices[p]) * sp.inner) * es,
                  static_cast<size_t>(sp.inner) * es,
                  dst + static_cast<size_t>((o * U + p) * sp.inner) * es);
  *outs[0] = std::move(y);
  *outs[1] = Tensor::from_i64({U}, indices.data());
  *outs[2] = Tensor::from_i64({sp.n}, inverse.data());
  *outs[3] = Tensor::from_i64({U}, cnt.data());
}

Result<KernelPtr> build_unique(BuildContext& ctx) {
  const Shape& s = ctx.in_shape(0);
  const bool flat = !ctx.has_attr("axis");
  const int64_t axis =
      flat ? 0 : normalize_axis(ctx.attr_int("axis", 0), static_cast<int64_t>(s.size()));
  if (axis < 0)
    return ctx.error("axis {} is out of range for X {}", ctx.attr_int("axis", 0), shape_str(s));
  const bool sorted = ctx.attr_int("sorted", 1) != 0;
  if (const Tensor* x = ctx.in_value(0)) {
    Tensor outs[4];
    Tensor* ptrs[4] = {&outs[0], &outs[1], &outs[2], &outs[3]};
    unique(x, flat, axis, sorted, ptrs);
    for (size_t i = 0; i < 4 && i < ctx.num_outputs(); ++i)
      ctx.set_output_value(i, std::move(outs[i]));
    return no_kernel();
  }
  for (size_t i = 0; i < ctx.num_outputs(); ++i)
    ctx.set_output_dynamic(i, i == 0 ? ctx.in_dtype(0) : DType::kI64);
  const size_t n_out = ctx.num_outputs();
  return make_kernel([=](const Tensor* const* in, Tensor* const* out) {
    Tensor outs[4];
    Tensor* ptrs[4] = {&outs[0], &outs[1], &outs[2], &outs[3]};
    unique(in[0], flat, axis, sorted, ptrs);
    for (size_t i = 0; i < n_out; ++i)
      if (out[i]) *out[i] = std::move(outs[i]);
    return Status::OK();
  });
}

}  // namespace

void register_value_shape_ops(OpRegistry& r) {
  r.add("NonZero", 1, 1, 1, 1, build_non_zero);
  r.add("Unique", 1, 1, 1, 4, build_unique);
}

}  // namespace dlsys
