// Normalizations over parts of a tensor: InstanceNormalization (per sample and channel),
// LRN (across neighbouring channels) and MeanVarianceNormalization (over chosen axes).
//
// InstanceNormalization runs oneDNN's batch normalization on X viewed as [1, N*C, spatial]
// (statistics per row computed by oneDNN; scale and bias tiled over N per run). LRN with an odd
// `size` runs oneDNN's lrn_forward (across channels); oneDNN centres its window, ONNX puts the
// extra channel of an even window after the centre, so even sizes run a plain loop.
// MeanVarianceNormalization is a plain loop with double statistics.
#include <algorithm>
#include <cmath>

#include "ops/dnnl_util.h"
#include "ops/op_registry.h"

namespace dlsys {
namespace {

// ---- InstanceNormalization ---------------------------------------------------------------------

Result<KernelPtr> build_instance_norm(BuildContext& ctx) {
  for (size_t i = 0; i < 3; ++i) DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(i, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 3) return ctx.error("input {} must be [N, C, D1, ...] (rank >= 3)", shape_str(x));
  const int64_t N = x[0], C = x[1], S = shape_numel(x) / std::max<int64_t>(N * C, 1);
  for (size_t i = 1; i < 3; ++i)
    if (ctx.in_shape(i) != Shape{C})
      return ctx.error("input {} ({}) has shape {}, expected [{}]", i, i == 1 ? "scale" : "B",
                       shape_str(ctx.in_shape(i)), C);
  const float eps = ctx.attr_float("epsilon", 1e-5f);
  ctx.set_output(0, DType::kF32, x);
  if (shape_numel(x) == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  auto md = plain_md({1, N * C, S}, DType::kF32);
  auto cmd = plain_md({N * C}, DType::kF32);
  auto call = std::make_shared<DnnlCall>();
  DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
    auto flags = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    auto d =
        dnnl::batch_normalization_forward::desc(dnnl::prop_kind::forward_inference, md, eps, flags);
    call->prim = dnnl::batch_normalization_forward(
        dnnl::batch_normalization_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
    call->add(DNNL_ARG_SRC, md);
    call->add(DNNL_ARG_DST, md);
    call->add(DNNL_ARG_SCALE, cmd);
    call->add(DNNL_ARG_SHIFT, cmd);
  }));
  // Scale and shift for each of the N*C rows, filled from the [C] inputs per run.
  auto tiled = std::make_shared<std::vector<float>>(static_cast<size_t>(2 * N * C));
  return make_kernel([call, tiled, N, C](const Tensor* const* in, Tensor* const* o) {
    float* sc = tiled->data();
    float* sh = sc + N * C;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c) {
        sc[n * C + c] = in[1]->data_as<float>()[c];
        sh[n * C + c] = in[2]->data_as<float>()[c];
      }
    call->bind(DNNL_ARG_SRC, in[0]->data());
    call->bind(DNNL_ARG_SCALE, sc);
    call->bind(DNNL_ARG_SHIFT, sh);
    call->bind(DNNL_ARG_DST, o[0]->data());
    call->exec();
    return Status::OK();
  });
}

// ---- LRN ---------------------------------------------------------------------------------------

Result<KernelPtr> build_lrn(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  if (x.size() < 3) return ctx.error("input {} must be [N, C, D1, ...] (rank >= 3)", shape_str(x));
  if (!ctx.has_attr("size")) return ctx.error("attribute 'size' is required");
  const int64_t size = ctx.attr_int("size", 1);
  if (size < 1) return ctx.error("size must be >= 1, got {}", size);
  const float alpha = ctx.attr_float("alpha", 1e-4f), beta = ctx.attr_float("beta", 0.75f);
  const float bias = ctx.attr_float("bias", 1.f);
  ctx.set_output(0, DType::kF32, x);
  const int64_t N = x[0], C = x[1], S = shape_numel(x) / std::max<int64_t>(N * C, 1);
  if (shape_numel(x) == 0)
    return make_kernel([](const Tensor* const*, Tensor* const*) { return Status::OK(); });
  if (size % 2 == 1) {
    auto md = plain_md({N, C, S, 1}, DType::kF32);
    auto call = std::make_shared<DnnlCall>();
    DLSYS_RETURN_IF_ERROR(dnnl_try(ctx, [&] {
      auto d = dnnl::lrn_forward::desc(dnnl::prop_kind::forward_inference,
                                       dnnl::algorithm::lrn_across_channels, md, size, alpha, beta,
                                       bias);
      call->prim =
          dnnl::lrn_forward(dnnl::lrn_forward::primitive_desc(d, dnnl_attr(), dnnl_engine()));
      call->add(DNNL_ARG_SRC, md);
      call->add(DNNL_ARG_DST, md);
    }));
    return make_kernel([call](const Tensor* const* in, Tensor* const* o) {
      call->bind(DNNL_ARG_SRC, in[0]->data());
      call->bind(DNNL_ARG_DST, o[0]->data());
      call->exec();
      return Status::OK();
    });
  }
  // Even size: channels [c - (size-1)/2, c + size/2], as ONNX's floor/ceil window says.
  const int64_t lo = (size - 1) / 2, hi = size / 2;
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* X = in[0]->data_as<float>();
    float* Y = o[0]->data_as<float>();
    for (int64_t n = 0; n < N; ++n)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t s = 0; s < S; ++s) {
          double sum = 0;
          for (int64_t k = std::max<int64_t>(c - lo, 0); k <= std::min(c + hi, C - 1); ++k) {
            const double v = X[(n * C + k) * S + s];
            sum += v * v;
          }
          const int64_t i = (n * C + c) * S + s;
          Y[i] = static_cast<float>(X[i] / std::pow(bias + alpha / size * sum, beta));
        }
    return Status::OK();
  });
}

// ---- MeanVarianceNormalization -----------------------------------------------------------------

Result<KernelPtr> build_mvn(BuildContext& ctx) {
  DLSYS_RETURN_IF_ERROR(ctx.expect_dtype(0, {DType::kF32}));
  const Shape& x = ctx.in_shape(0);
  const int64_t rank = static_cast<int64_t>(x.size());
  std::vector<int64_t> axes =
      ctx.has_attr("axes") ? ctx.attr_ints("axes") : std::vector<int64_t>{0, 2, 3};
  std::vector<bool> reduced(static_cast<size_t>(rank), false);
  for (int64_t a : axes) {
    const int64_t n = normalize_axis(a, rank);
    if (n < 0) return ctx.error("axis {} is out of range for X {}", a, shape_str(x));
    reduced[n] = true;
  }
  ctx.set_output(0, DType::kF32, x);
  // Each element's group: its index over the kept dims (computed once, here).
  const int64_t total = shape_numel(x);
  const std::vector<int64_t> st = shape_strides(x);
  auto group = std::make_shared<std::vector<int64_t>>(static_cast<size_t>(total));
  int64_t groups = 1;
  for (int64_t d = 0; d < rank; ++d)
    if (!reduced[d]) groups *= x[d];
  for (int64_t i = 0; i < total; ++i) {
    int64_t g = 0, rest = i;
    for (int64_t d = 0; d < rank; ++d) {
      const int64_t c = rest / st[d];
      rest %= st[d];
      if (!reduced[d]) g = g * x[d] + c;
    }
    (*group)[i] = g;
  }
  const double per_group = static_cast<double>(total) / static_cast<double>(groups);
  auto stats = std::make_shared<std::vector<double>>(static_cast<size_t>(2 * groups));
  return make_kernel([=](const Tensor* const* in, Tensor* const* o) {
    const float* X = in[0]->data_as<float>();
    float* Y = o[0]->data_as<float>();
    double* mean = stats->data();
    double* sq = mean + groups;
    std::fill(mean, mean + 2 * groups, 0.0);
    const int64_t* g = group->data();
    for (int64_t i = 0; i < total; ++i) mean[g[i]] += X[i];
    for (int64_t k = 0; k < groups; ++k) mean[k] /= per_group;
    for (int64_t i = 0; i < total; ++i) {
      const double d = X[i] - mean[g[i]];
      sq[g[i]] += d * d;
    }
    // ONNX's function body: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9).
    for (int64_t k = 0; k < groups; ++k) sq[k] = std::sqrt(sq[k] / per_group) + 1e-9;
    for (int64_t i = 0; i < total; ++i) Y[i] = static_cast<float>((X[i] - mean[g[i]]) / sq[g[i]]);
    return Status::OK();
  });
}

}  // namespace

void register_local_norm_ops(OpRegistry& r) {
  r.add("InstanceNormalization", 3, 3, 1, 1, build_instance_norm);
  r.add("LRN", 1, 1, 1, 1, build_lrn);
  r.add("MeanVarianceNormalization", 1, 1, 1, 1, build_mvn);
}

}  // namespace dlsys
